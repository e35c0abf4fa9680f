package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildListsEveryProblem (issue 14 item 12): Build reports the file's,
// the environment's, the flags', Validate's and the extra checks'
// problems together, and names settings by their keys, never Go types.
func TestBuildListsEveryProblem(t *testing.T) {
	file := filepath.Join(t.TempDir(), "throng.yaml")
	os.WriteFile(file, []byte(`listners:
  amqp: ":5672"
listeners:
  amqpp: ":1"
  mqtt: ":2883"
engine:
  maxStore: lots
  syncAlways: maybe
connections:
  maxHandshakes: many
log: [text]
Anonymous: false
`), 0o600)
	_, err := Build(file, []string{"THRONG_MAX_STORE=huge"}, nil, func(*Config) error { return errors.New("extra check") })
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"line 1: unknown key listners (did you mean listeners?)",
		"line 4: unknown key listeners.amqpp (did you mean listeners.amqp?)",
		`line 7: engine.maxStore: invalid size "lots"`,
		`line 8: engine.syncAlways: "maybe" is not true or false`,
		`line 10: connections.maxHandshakes: "many" is not a whole number`,
		"line 11: log: want a mapping of settings, not a list",
		"line 12: unknown key Anonymous (did you mean anonymous?)",
		"environment THRONG_MAX_STORE",
		"extra check",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "config.") || strings.Contains(msg, "type ") || strings.Contains(msg, "!!") {
		t.Errorf("Go or YAML internals in:\n%s", msg)
	}

	// The valid settings of a file are read as before.
	os.WriteFile(file, []byte("listeners:\n  mqtt: ':2883'\nengine:\n  maxStore: 1GiB\n"), 0o600)
	c, err := Build(file, nil, nil)
	if err != nil || c.Listeners.MQTT != ":2883" || c.Engine.MaxStore != 1<<30 || c.Listeners.AMQP != Default().Listeners.AMQP {
		t.Fatalf("%+v %v", c, err)
	}
}
