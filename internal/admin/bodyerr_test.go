package admin

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestBodyProblem: body errors name the JSON field and what it wants,
// never a Go type (issue 14 item 12).
func TestBodyProblem(t *testing.T) {
	for body, want := range map[string]string{
		`{"name":"acme","limits":{"maxAddresses":"ten"}}`: "limits.maxAddresses: a string where a whole number belongs",
		`{"name":"acme","strict":1}`:                      "strict: a number where true or false belongs",
		`{"name":["a"]}`:                                  "name: an array where a string belongs",
		`{"name":`:                                        "unexpected end of JSON input",
		`{"name":x}`:                                      "not valid JSON at byte 9",
	} {
		var v TenantRequest
		err := json.Unmarshal([]byte(body), &v)
		got := bodyProblem(err)
		if !strings.Contains(got, want) || strings.Contains(got, "Go struct") || strings.Contains(got, "TenantRequest") {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}
