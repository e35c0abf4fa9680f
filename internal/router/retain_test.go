package router

import (
	"github.com/throngmq/throng/internal/message"
	"sort"
	"strings"
	"testing"
)

func TestRetained(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, kv := range [][2]string{{"a/b", "1"}, {"a/b", "2"}, {"a/c", "3"}, {"$SYS/x", "4"}, {"a.b", "5"}} {
		if err := e.r.Retain(ctx, "default", kv[0], msg(kv[1])); err != nil {
			t.Fatal(err)
		}
	}
	get := func(filter string) string {
		t.Helper()
		var got []string
		if err := e.r.Retained(ctx, "default", filter, func(name string, m *message.Message) {
			got = append(got, name+"="+string(m.Body))
		}); err != nil {
			t.Fatal(err)
		}
		sort.Strings(got)
		return strings.Join(got, ",")
	}
	cases := map[string]string{
		"a/b":    "a/b=2", // exact name: only the latest
		"a.b":    "a.b=5",
		"a/+":    "a/b=2,a/c=3",
		"#":      "a.b=5,a/b=2,a/c=3", // no $ names under a leading wildcard
		"$SYS/#": "$SYS/x=4",
		"none":   "",
	}
	for f, want := range cases {
		if got := get(f); got != want {
			t.Errorf("Retained(%q) = %q, want %q", f, got, want)
		}
	}
	if err := e.r.Retain(ctx, "default", "a/b", nil); err != nil {
		t.Fatal(err)
	}
	if got := get("a/b"); got != "" {
		t.Errorf("after clearing: %q", got)
	}
	if got := get("a/#"); got != "a/c=3" {
		t.Errorf("after clearing, a/#: %q", got)
	}
}
