package console

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestAnomaliesMissing: the anomalies view names a cluster's nodes that
// did not answer (admin API "missing"), as the connections view does,
// and says nothing of the kind when every node answered.
func TestAnomaliesMissing(t *testing.T) {
	s := &Server{}
	if err := s.parse(); err != nil {
		t.Fatal(err)
	}
	render := func(body string) string {
		var rep anomalyReport
		if err := json.Unmarshal([]byte(body), &rep); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		p := &page{Title: "Anomalies", Nav: "anomalies", Data: map[string]any{"Report": rep, "Kinds": kindTitles}}
		if err := s.pages["anomalies"].ExecuteTemplate(&buf, "layout", p); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	out := render(`{"findings":[],"topTalkers":[],"thresholds":{},"missing":["n2","n3"]}`)
	if !strings.Contains(out, `id="anomalies-missing"`) || !strings.Contains(out, "n2, n3") {
		t.Fatalf("no missing nodes in the page:\n%s", out)
	}
	if out := render(`{"findings":[],"topTalkers":[],"thresholds":{}}`); strings.Contains(out, `id="anomalies-missing"`) {
		t.Fatal("missing nodes shown for an answer without them")
	}
}
