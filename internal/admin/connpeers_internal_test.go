package admin

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/conns"
)

// pagedPeers stands for other nodes in the paging test: the cluster
// itself is tested end to end (internal/cluster/connections_test.go);
// this one walks the merge's page boundaries, which need many nodes and
// connections.
type pagedPeers struct {
	nodes []PeerNode
	count map[string]int // connections per node, seq 1..n
	fail  string         // a node that does not answer
}

func (p pagedPeers) Nodes() []PeerNode { return p.nodes }

func (p pagedPeers) List(_ context.Context, node string, _ conns.Filter, after string, limit int) ([]conns.Snapshot, string, error) {
	if node == p.fail {
		return nil, "", ErrNodeNoAnswer
	}
	from := 0
	if after != "" {
		if idNode(after) != node {
			return nil, "", fmt.Errorf("%s asked with after %s", node, after)
		}
		from, _ = strconv.Atoi(after[strings.LastIndexByte(after, '-')+1:])
	}
	var out []conns.Snapshot
	for seq := from + 1; seq <= p.count[node]; seq++ {
		out = append(out, conns.Snapshot{ID: node + "-" + strconv.Itoa(seq), Node: node})
	}
	if len(out) > limit {
		return out[:limit], out[limit-1].ID, nil
	}
	return out, "", nil
}

func (pagedPeers) Get(context.Context, string, string, string) (conns.Snapshot, error) {
	return conns.Snapshot{}, ErrConnNotFound
}
func (pagedPeers) Close(context.Context, string, string, string, string) error {
	return ErrConnNotFound
}

// TestListAcrossPages: pages of every size walk every node's connections
// once, in node then sequence order; an offline node and one that does
// not answer are named in every page's missing.
func TestListAcrossPages(t *testing.T) {
	peers := pagedPeers{
		nodes: []PeerNode{{"n3", true}, {"n1", true}, {"n4", false}, {"n5", true}},
		count: map[string]int{"n1": 3, "n3": 2, "n5": 4},
		fail:  "n5",
	}
	s, err := New(Config{Router: fakeRouter{}, Store: fakeStore{}, Auth: fakeAuth{}, Ready: func() bool { return true },
		Observe: Observe{Conns: conns.New("n2"), Peers: peers}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"n1-1", "n1-2", "n1-3", "n3-1", "n3-2"}
	for limit := 1; limit <= 6; limit++ {
		var got []string
		pages := 0
		for after := ""; ; pages++ {
			l := s.listAcross(context.Background(), peers, conns.Filter{}, after, limit)
			if len(l.Connections) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(l.Connections))
			}
			if !slices.Equal(l.Missing, []string{"n4", "n5"}) {
				t.Fatalf("limit %d after %q: missing %v", limit, after, l.Missing)
			}
			for _, c := range l.Connections {
				got = append(got, c.ID)
			}
			if l.Next == "" || pages > 10 {
				break
			}
			after = l.Next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: %v, want %v", limit, got, want)
		}
	}
}
