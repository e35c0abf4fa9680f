package registry

import "testing"

func TestWildcard(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"acme*", "acme-1", true}, {"acme*", "acm", false}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*", "", true}, {"a/*", "a/b/c", true}, {"[x]", "[x]", true}, {"[x]", "x", false}, {`a\b`, `a\b`, true},
		{"eclipse*", "eclipse", true}, {"x", "X", false},
	} {
		if got := wildcard(c.pattern, c.s); got != c.want {
			t.Errorf("wildcard(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
}
