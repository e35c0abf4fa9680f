package admin

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

func TestIfMatch(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "3": "3", `"3"`: "3", `W/"3"`: "3", "*": "", " 89d40d26-5956 ": "89d40d26-5956", `"`: `"`,
	} {
		r := httptest.NewRequest("PUT", "/v1/devices/t/d", nil)
		if in != "" {
			r.Header.Set("If-Match", in)
		}
		if got := ifMatch(r); got != want {
			t.Errorf("If-Match %q: %q, want %q", in, got, want)
		}
	}
}

func TestMatchAndSort(t *testing.T) {
	docs := []map[string]any{
		jsonDoc(map[string]any{"id": "b", "enabled": true, "ext": map[string]any{"n": 2, "brand": "acme"}}),
		jsonDoc(map[string]any{"id": "a", "enabled": false, "ext": map[string]any{"n": 10, "a/b": "x"}}),
		jsonDoc(map[string]any{"id": "c"}),
	}
	f := func(field, value string) registry.Filter {
		return registry.Filter{Field: field, Value: json.RawMessage(value)}
	}
	for _, c := range []struct {
		filters []registry.Filter
		want    []bool
	}{
		{[]registry.Filter{f("/enabled", "true")}, []bool{true, false, false}},
		{[]registry.Filter{f("/ext/n", "10")}, []bool{false, true, false}},
		{[]registry.Filter{f("/ext/brand", `"ac*"`)}, []bool{true, false, false}},
		{[]registry.Filter{f("/ext/a~1b", `"x"`)}, []bool{false, true, false}},
		{[]registry.Filter{f("/ext/n", `"2"`)}, []bool{false, false, false}},
		{[]registry.Filter{f("/enabled", "true"), f("/ext/n", "2")}, []bool{true, false, false}},
	} {
		for i, d := range docs {
			if got := registry.Match(d, c.filters); got != c.want[i] {
				t.Errorf("filters %v on %v: %v", c.filters, d, got)
			}
		}
	}
	// Numbers sort as numbers, missing values first, the id breaks ties.
	s := []registry.Sort{{Field: "/ext/n"}}
	if !registry.Less(docs[2], docs[0], s) || !registry.Less(docs[0], docs[1], s) || registry.Less(docs[1], docs[0], s) {
		t.Error("ascending /ext/n")
	}
	s = []registry.Sort{{Field: "/ext/n", Direction: "desc"}}
	if !registry.Less(docs[1], docs[0], s) {
		t.Error("descending /ext/n")
	}
	if !registry.Less(docs[1], docs[0], nil) {
		t.Error("default order by id")
	}
}

func TestNewUUID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		u := registry.NewUUID()
		if len(u) != 36 || seen[u] || u[14] != '4' || tenant.ValidateName(u) != nil {
			t.Fatalf("uuid %q", u)
		}
		seen[u] = true
	}
}
