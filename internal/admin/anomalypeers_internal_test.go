package admin

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/history"
	"github.com/throngmq/throng/internal/metrics"
)

// observePeers stands for other nodes in the anomaly test: n3 does not
// answer its part, n5 answers its part but not the tally, n4 is
// offline; n1 and n5 carry a device's talker each.
type observePeers struct {
	pagedPeers
	mu    *sync.Mutex
	asked map[string]int // node: the split it was asked with; guarded by mu
}

func (p observePeers) Anomalies(_ context.Context, node, _ string, _ metrics.Thresholds, split int) (metrics.NodeReport, error) {
	p.mu.Lock()
	p.asked[node] = split
	p.mu.Unlock()
	if node == "n3" {
		return metrics.NodeReport{}, ErrNodeNoAnswer
	}
	return metrics.NodeReport{
		Report: metrics.Report{
			TopTalkers: []metrics.Talker{{Tenant: "acme", Connection: node + "-1", Device: "d1", ClientID: "c-" + node, MessagesPerSecond: 30}},
			Findings: []metrics.Finding{{Kind: metrics.KindReconnectLoop, Tenant: "acme", ClientID: "loop",
				Evidence: map[string]any{"connects": float64(2), "within": "2m0s"}}},
		},
		TenantRates: map[string]float64{"acme": 40},
	}, nil
}

func (p observePeers) Tally(_ context.Context, node string, keys []metrics.TallyKey) ([]int64, error) {
	if node == "n5" {
		return nil, errors.New("no answer")
	}
	out := make([]int64, len(keys))
	for i := range out {
		out[i] = 2
	}
	return out, nil
}

func (observePeers) History(context.Context, string, string, string) (history.View, error) {
	return history.View{}, ErrConnNotFound
}

// TestReportAcross: the report asks every online node with the node
// count as split, names the offline node and those that did not answer
// either round, and merges what the others answered: the device's
// talkers of two nodes are one (60/s of the tenant's 80), the client's
// connects are summed (n1's tally 2, n5's finding 2 as it did not
// tally: a loop at 4, none at 5).
func TestReportAcross(t *testing.T) {
	reg := conns.New("n2")
	ob := metrics.NewObserver(metrics.Options{Conns: reg})
	peers := observePeers{pagedPeers: pagedPeers{nodes: []PeerNode{{"n1", true}, {"n3", true}, {"n4", false}, {"n5", true}}},
		mu: &sync.Mutex{}, asked: map[string]int{}}
	s, err := New(Config{Router: fakeRouter{}, Store: fakeStore{}, Auth: fakeAuth{}, Ready: func() bool { return true },
		Observe: Observe{Conns: reg, Anomalies: ob, Peers: peers}})
	if err != nil {
		t.Fatal(err)
	}
	r := s.reportAcross(context.Background(), peers, "acme", metrics.Thresholds{})
	if !slices.Equal(r.Missing, []string{"n3", "n4", "n5"}) {
		t.Fatalf("missing %v", r.Missing)
	}
	if peers.asked["n1"] != 5 || peers.asked["n5"] != 5 || peers.asked["n4"] != 0 {
		t.Fatalf("asked %v", peers.asked)
	}
	if len(r.TopTalkers) != 1 || r.TopTalkers[0].MessagesPerSecond != 60 || r.TopTalkers[0].Share != 0.75 {
		t.Fatalf("top talkers %+v", r.TopTalkers)
	}
	loops := func(r AnomalyReport) []float64 {
		var out []float64
		for _, f := range r.Findings {
			if f.Kind == metrics.KindReconnectLoop && f.ClientID == "loop" {
				n, _ := f.Evidence["connects"].(uint64)
				out = append(out, float64(n))
			}
		}
		return out
	}
	if l := loops(r); len(l) != 0 {
		t.Fatalf("a loop of %v connects at the default threshold 5: %+v", l, r.Findings)
	}
	r = s.reportAcross(context.Background(), peers, "acme", metrics.Thresholds{ReconnectLoop: 4})
	if l := loops(r); !slices.Equal(l, []float64{4}) {
		t.Fatalf("loops %v at threshold 4: %+v", l, r.Findings)
	}
}
