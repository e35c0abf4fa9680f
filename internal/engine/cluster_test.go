package engine

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// freePorts returns n distinct free loopback ports. The peers of a
// cluster must be known before its nodes start, so the ports are picked
// first (and may, rarely, be taken meanwhile).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func clusterConfig(dir, node string, port int, peers []string, secret string, join time.Duration) Config {
	return Config{DataDir: dir, DiskFreeLimit: -1, Cluster: &Cluster{
		Name: "t", NodeName: node, Listen: "127.0.0.1:" + strconv.Itoa(port),
		Peers: peers, Secret: secret, JoinTimeout: join,
	}}
}

// TestCluster (issue 16): two engines form a cluster with the shared
// secret, a third with another secret cannot join; an account ensured on
// one node is registered on the other before EnsureAccount returns, so a
// replicated stream in it can be created at once; a restarted node has
// its accounts before its server replays the stream assignments, so the
// stream is back on it.
func TestCluster(t *testing.T) {
	ports := freePorts(t, 3)
	peers := []string{"127.0.0.1:" + strconv.Itoa(ports[0]), "127.0.0.1:" + strconv.Itoa(ports[1])}
	dirs := []string{t.TempDir(), t.TempDir()}
	engines := make([]*Engine, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			engines[i], errs[i] = Start(clusterConfig(dirs[i], fmt.Sprintf("n%d", i), ports[i], peers, "s3cret", time.Minute))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	defer func() {
		for _, e := range engines {
			if e != nil {
				e.Shutdown()
			}
		}
	}()
	for i, e := range engines {
		st := e.Status()
		if !st.Clustered || st.MetaLeader == "" || len(st.Nodes) != 2 || st.Replicas != 2 {
			t.Fatalf("node %d status %+v", i, st)
		}
		if count, leave := e.JoinPeers("x"); count() != 2 {
			t.Errorf("node %d: a clustered engine alone in an account counts %d peers, want 2 (itself and the others)", i, count())
		} else {
			leave()
		}
	}

	// A node with another secret does not join (its routes are refused).
	_, err := Start(clusterConfig(t.TempDir(), "intruder", ports[2], peers, "guess", 3*time.Second))
	if err == nil {
		t.Fatal("a node with the wrong secret joined")
	}
	for i, e := range engines {
		for _, r := range e.Status().Routes {
			if r.Node == "intruder" {
				t.Errorf("node %d has a route to the intruder", i)
			}
		}
	}

	// An account ensured on n0 is on n1 when EnsureAccount returns.
	acc := AccountFor("acme")
	if err := engines[0].EnsureAccount(acc); err != nil {
		t.Fatal(err)
	}
	engines[1].mu.Lock()
	_, ok := engines[1].accounts[acc]
	engines[1].mu.Unlock()
	if !ok {
		t.Fatal("the account is not registered on the other node")
	}
	nc, err := engines[0].Connect(acc)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "Q", Subjects: []string{"q.>"}, Replicas: engines[0].Replicas()})
	if err != nil {
		t.Fatalf("replicated stream in a new account: %v", err)
	}
	for i := range 10 {
		if _, err := js.Publish(ctx, "q.x", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 1 {
		t.Fatalf("stream info %+v: %v", info, err)
	}
	nc.Close()

	// n1 restarts: its accounts come back before the stream assignments
	// replay, so the stream is healthy there again.
	engines[1].Shutdown()
	engines[1] = nil
	e1, err := Start(clusterConfig(dirs[1], "n1", ports[1], peers, "s3cret", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	engines[1] = e1
	deadline := time.Now().Add(30 * time.Second)
	for {
		h := e1.srv.Healthz(&server.HealthzOptions{Account: acc})
		ready, why := e1.Ready()
		if h.Status == "ok" && ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node: stream health %q %s; ready %v %s", h.Status, h.Error, ready, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterPeers: the cluster size counts this node once, listed or
// not, and replicas follow it up to 3.
func TestClusterPeers(t *testing.T) {
	for _, tc := range []struct {
		peers    []string
		replicas int
		want     int
	}{
		{[]string{"127.0.0.1:6222", "127.0.0.1:6223", "127.0.0.1:6224"}, 0, 3},
		{[]string{"127.0.0.1:6223", "127.0.0.1:6224"}, 0, 3},
		{[]string{"127.0.0.1:6223"}, 0, 2},
		{[]string{"127.0.0.1:6222", "127.0.0.1:6223", "127.0.0.1:6224", "127.0.0.1:6225", "127.0.0.1:6226"}, 0, 3},
		{[]string{"127.0.0.1:6222", "127.0.0.1:6223", "127.0.0.1:6224", "127.0.0.1:6225", "127.0.0.1:6226"}, 5, 5},
		{nil, 0, 1},
	} {
		c := &Cluster{NodeName: "n0", Listen: "127.0.0.1:6222", Peers: tc.peers, Replicas: tc.replicas}
		if got := c.replicas(); got != tc.want {
			t.Errorf("%v replicas %d: got %d, want %d", tc.peers, tc.replicas, got, tc.want)
		}
	}
	if !isSelf("localhost:6222", ":6222", "n0") || isSelf("localhost:6223", ":6222", "n0") || !isSelf("n0:6222", ":6222", "n0") {
		t.Error("isSelf")
	}
}
