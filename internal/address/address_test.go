package address

import (
	"strings"
	"testing"
)

func TestSubjectRoundTrip(t *testing.T) {
	cases := map[string]string{
		"orders":           "q.orders",
		"orders/eu":        "q.orders.eu",
		"a.b":              "q.a%2Eb",
		"a*b/>":            "q.a%2Ab.%3E",
		"with space/tab\t": "q.with%20space.tab%09",
		"100%":             "q.100%25",
		"/lead":            "q.%.lead",
		"trail/":           "q.trail.%",
		"a//b":             "q.a.%.b",
		"ünïcode/日本":       "q.ünïcode.日本",
		"$SYS/broker/x":    "q.$SYS.broker.x",
		"%":                "q.%25",
		"%2E":              "q.%252E",
	}
	for name, want := range cases {
		got := Subject("q", name)
		if got != want {
			t.Errorf("Subject(%q) = %q, want %q", name, got, want)
		}
		back, err := NameFromSubject("q", got)
		if err != nil || back != name {
			t.Errorf("NameFromSubject(%q) = %q, %v; want %q", got, back, err, name)
		}
	}
}

func FuzzSubjectRoundTrip(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a.b", "x y", "/", "%", "%%2", "a//b/", "*>", "\x01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		subj := Subject("t", name)
		for _, tok := range strings.Split(subj, ".") {
			if tok == "" || strings.ContainsAny(tok, " \t\r\n*>") {
				t.Fatalf("Subject(%q) = %q has a bad token", name, subj)
			}
		}
		back, err := NameFromSubject("t", subj)
		if err != nil || back != name {
			t.Fatalf("round trip %q -> %q -> %q (%v)", name, subj, back, err)
		}
	})
}

func TestMatch(t *testing.T) {
	cases := []struct {
		filter, name string
		want         bool
	}{
		{"a/b", "a/b", true},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"+/+", "a/b", true},
		{"+", "a/b", false},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/+/c", "a//c", true},
		{"a/b", "a/c", false},
		{"a/b/#", "a/b", true},
		{"a/b/#", "a", false},
	}
	for _, c := range cases {
		if got := Match(c.filter, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.name, got, c.want)
		}
	}
}

func TestFilterSubjects(t *testing.T) {
	cases := map[string][]string{
		"a/+":   {"t.a.*"},
		"a/#":   {"t.a", "t.a.>"},
		"#":     {"t.>"},
		"+/b.c": {"t.*.b%2Ec"},
	}
	for f, want := range cases {
		got := FilterSubjects("t", f)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("FilterSubjects(%q) = %v, want %v", f, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	bad := []string{"", "a/#", "a+b", "x::y", string([]byte{0xff}), "a\x00"}
	for _, n := range bad {
		if ValidateName(n) == nil {
			t.Errorf("ValidateName(%q) accepted", n)
		}
	}
	for _, f := range []string{"a/#/b", "a#", "a/b+", ""} {
		if ValidateFilter(f) == nil {
			t.Errorf("ValidateFilter(%q) accepted", f)
		}
	}
	if (Address{Name: "q", Type: "fifo"}).Validate() == nil {
		t.Error("unknown type accepted")
	}
	if (Address{Name: "q", Type: Queue, Limits: Limits{Overflow: DropOldest}}).Validate() == nil {
		t.Error("drop-oldest queue accepted")
	}
	if (Address{Name: "s", Type: Subscription}).Validate() == nil {
		t.Error("subscription without topic accepted")
	}
	if StreamName("Q", "a") == StreamName("Q", "b") || strings.ContainsAny(StreamName("Q", "a.b/c"), ".*> /\\") {
		t.Error("bad stream names")
	}
}
