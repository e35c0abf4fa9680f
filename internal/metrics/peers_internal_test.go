package metrics

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/conns"
)

// TestMergeAcrossNodes: three nodes' parts of a report merged as the
// admin API does (internal/admin/anomalies.go), the other nodes' parts
// through JSON as they travel. A client that reconnects twice on each
// node is a reconnect loop of the cluster (6 ≥ 5) though no node alone
// sees one; a device that moved from n1 to n2 is not silent, one that
// stopped on n1 is, on every node's merge; top talkers sum per client
// and device across nodes and take their share of the cluster's rate.
func TestMergeAcrossNodes(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	clock := func() time.Time { return now }
	nodes := make([]*Observer, 3)
	for i := range nodes {
		nodes[i] = NewObserver(Options{Conns: conns.New("n" + string(rune('1'+i))), Now: clock,
			TenantThresholds: func(string) Thresholds { return Thresholds{SilentMinSeconds: 2} }})
	}
	for _, o := range nodes {
		for range 2 {
			o.find.connected(conns.Info{Tenant: "t", ClientID: "bouncer", Remote: "10.0.0.1:1234"})
		}
	}
	nodes[0].find.connected(conns.Info{Tenant: "t", ClientID: "rare", Remote: "10.0.0.2:1234"})
	for i := range 50 {
		now = t0.Add(time.Duration(i) * 200 * time.Millisecond)
		switch {
		case i < 6:
			nodes[0].DeviceSeen("t", "mover", 0)
			nodes[0].DeviceSeen("t", "stopper", 0)
		default:
			nodes[1].DeviceSeen("t", "mover", 0)
		}
	}
	now = t0.Add(10 * time.Second)

	if alone := nodes[0].Report("t", Thresholds{}); !has(alone, KindSilent, "mover") || has(alone, KindReconnectLoop, "bouncer") {
		t.Fatalf("n1 alone (the test's premise: its tracker finds the moved device silent): %+v", alone.Findings)
	}
	merged := func(asker int) Report {
		parts := make([]NodeReport, len(nodes))
		for i, o := range nodes {
			parts[i] = o.NodeReport("t", Thresholds{}, len(nodes))
			if i != asker {
				parts[i] = viaJSON(t, parts[i])
			}
		}
		keys := TallyKeys(parts)
		tallies := make([][]int64, len(nodes))
		for i, o := range nodes {
			tallies[i] = o.Tally(keys)
		}
		return nodes[asker].Merge("t", Thresholds{}, parts, keys, tallies)
	}
	for asker := range nodes {
		r := merged(asker)
		if has(r, KindSilent, "mover") || !has(r, KindSilent, "stopper") {
			t.Errorf("n%d: silent devices: %+v", asker+1, r.Findings)
		}
		if !has(r, KindReconnectLoop, "bouncer") || has(r, KindReconnectLoop, "rare") {
			t.Errorf("n%d: reconnect loops: %+v", asker+1, r.Findings)
		}
		for _, f := range r.Findings {
			switch {
			case f.Kind == KindReconnectLoop && evidenceNum(f.Evidence["connects"]) != 6:
				t.Errorf("n%d: bouncer's connects: %+v", asker+1, f)
			case f.Kind == KindSilent && evidenceNum(f.Evidence["silentInTenant"]) != 1:
				t.Errorf("n%d: silent in tenant: %+v", asker+1, f)
			}
		}
	}

	// Top talkers: flood is on n2 and n3 (70 of the tenant's 100/s).
	parts := []NodeReport{
		{Report: Report{TopTalkers: []Talker{{Tenant: "t", Connection: "n1-1", ClientID: "a", MessagesPerSecond: 5}}}, TenantRates: map[string]float64{"t": 10}},
		{Report: Report{TopTalkers: []Talker{{Tenant: "t", Connection: "n2-1", ClientID: "flood", MessagesPerSecond: 20},
			{Tenant: "t", Connection: "n2-2", ClientID: "a", MessagesPerSecond: 4}}}, TenantRates: map[string]float64{"t": 30}},
		{Report: Report{TopTalkers: []Talker{{Tenant: "t", Connection: "n3-7", ClientID: "flood", MessagesPerSecond: 50}}}, TenantRates: map[string]float64{"t": 60}},
	}
	r := nodes[0].Merge("t", Thresholds{}, parts, nil, nil)
	if len(r.TopTalkers) != 2 || r.TopTalkers[0].ClientID != "flood" || r.TopTalkers[0].MessagesPerSecond != 70 ||
		r.TopTalkers[0].Connection != "n3-7" || r.TopTalkers[0].Share != 0.7 || r.TopTalkers[1].MessagesPerSecond != 9 {
		t.Fatalf("top talkers: %+v", r.TopTalkers)
	}
	if !has(r, KindTopTalker, "flood") || has(r, KindTopTalker, "a") {
		t.Fatalf("top talker findings: %+v", r.Findings)
	}
}

func has(r Report, kind, who string) bool {
	for _, f := range r.Findings {
		if f.Kind == kind && (f.Device == who || f.ClientID == who) {
			return true
		}
	}
	return false
}

func viaJSON(t *testing.T, p NodeReport) NodeReport {
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var out NodeReport
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
