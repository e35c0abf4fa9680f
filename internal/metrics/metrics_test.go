package metrics

import (
	"strings"
	"testing"
)

func TestNewRegistry(t *testing.T) {
	// Two registries side by side: nothing is global.
	for range 2 {
		mfs, err := NewRegistry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		var goSeen, procSeen bool
		for _, mf := range mfs {
			goSeen = goSeen || strings.HasPrefix(mf.GetName(), "go_")
			procSeen = procSeen || strings.HasPrefix(mf.GetName(), "process_")
		}
		if !goSeen || !procSeen {
			t.Fatalf("go collector %v, process collector %v", goSeen, procSeen)
		}
	}
}
