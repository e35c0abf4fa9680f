package app

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestCheckDataDir (issue 14 item 9): a data directory that cannot be
// used is reported with its cause, before anything starts.
func TestCheckDataDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	storeFile := filepath.Join(dir, "storefile")
	if err := os.MkdirAll(storeFile, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(storeFile, StoreDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{dir, filepath.Join(dir, "new"), filepath.Join(dir, "new/deeper/still")} {
		if err := CheckDataDir(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Errorf("the check left %s behind", filepath.Join(dir, "new"))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("the check left files behind: %v", ents)
	}
	bad := map[string]string{
		"":                              "not set",
		file:                            "not a directory",
		filepath.Join(file, "sub", "x"): file + " is not a directory",
		storeFile:                       "is not a directory (the message store)",
	}
	if runtime.GOOS == "linux" {
		bad["/proc/nope"] = "cannot be created in /proc"
	}
	for d, want := range bad {
		err := CheckDataDir(d)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckDataDir(%q) = %v, want %q", d, err, want)
		}
	}
}
