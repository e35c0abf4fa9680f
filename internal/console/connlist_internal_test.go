package console

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestConnListMissing: the connections view reads a cluster's nodes that
// did not answer (admin API "missing") so that it can say whose
// connections are not listed.
func TestConnListMissing(t *testing.T) {
	raw := json.RawMessage(`{"connections":[{"id":"n1-1"}],"next":"n1-1","missing":["n3"]}`)
	conns, next, missing := connList(raw)
	if len(conns) != 1 || next != "n1-1" || !slices.Equal(missing, []string{"n3"}) {
		t.Fatalf("got %v %q %v", conns, next, missing)
	}
	if _, _, missing := connList(json.RawMessage(`{"connections":[]}`)); missing != nil {
		t.Fatalf("missing %v for an answer without it", missing)
	}
}
