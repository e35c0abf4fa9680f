package admin

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/address"
)

// TestOpenAPIDescribesAddressStats: every field the API returns in an
// address's stats is in the OpenAPI schema, and nothing else (issue 11.7
// added messagesRejected, bytesIn and bytesOut).
func TestOpenAPIDescribesAddressStats(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	described := doc.Components.Schemas["AddressStats"].Properties
	want := map[string]bool{}
	st := reflect.TypeFor[address.Stats]()
	for i := range st.NumField() {
		name, _, _ := strings.Cut(st.Field(i).Tag.Get("json"), ",")
		want[name] = true
		if _, ok := described[name]; !ok {
			t.Errorf("openapi.json AddressStats lacks %q", name)
		}
	}
	for name := range described {
		if !want[name] {
			t.Errorf("openapi.json AddressStats describes %q, which the API does not return", name)
		}
	}
	for _, name := range []string{"messagesRejected", "bytesIn", "bytesOut"} {
		if !want[name] {
			t.Errorf("address.Stats lacks %q", name)
		}
	}
}
