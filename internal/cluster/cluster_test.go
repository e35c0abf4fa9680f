package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// TestMain removes the binary buildBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var binDir string // set by buildBinary

// buildBinary builds cmd/throng once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "throng-cluster-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "throng")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/throngmq/throng/cmd/throng").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

const (
	secret   = "cluster-test-secret"
	adminPW  = "admin-test-password"
	appUser  = "app@acme"
	appPW    = "app-password"
	startMax = 60 * time.Second
)

// node is one `throng serve` process of the test cluster; its cluster
// port and data directory outlive the process (restart).
type node struct {
	name    string
	dir     string
	port    int // route listener
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	// Listener addresses: picked free before the first start and the same
	// across restarts, as a client's list of hosts would be. Never
	// written after newCluster: load workers read them concurrently.
	admin, amqp, mqtt, http string
	addrs                   chan [2]string // (listener, address) from the log
	// peers overrides the cluster's peer list for this node (a node
	// added to a running cluster, grow_test.go); set before its start.
	peers string
	// args are further serve flags, noSecret leaves the cluster secret
	// out (a node authenticated by route TLS alone), log keeps the
	// process's log lines when set (tls_test.go); set before its start.
	args     []string
	noSecret bool
	log      *lineLog
	// env is further environment (after the test's own, so it wins);
	// stdout gets the process's standard output when set.
	env    []string
	stdout io.Writer
	// tail is the process's last log lines, always kept: a node that
	// exits at start says why in the failure (CI once saw only "n3
	// exited: exit status 1").
	tail tailLog
}

// tailLog keeps the last tailLines lines.
type tailLog struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 25

func (l *tailLog) add(s string) {
	l.mu.Lock()
	if len(l.lines) == tailLines {
		l.lines = append(l.lines[:0], l.lines[1:]...)
	}
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *tailLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// lineLog keeps a process's log lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) add(s string) { l.mu.Lock(); l.lines = append(l.lines, s); l.mu.Unlock() }

// find returns the first line containing every one of parts.
func (l *lineLog) find(parts ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, s := range l.lines {
		for _, p := range parts {
			if !strings.Contains(s, p) {
				continue next
			}
		}
		return s
	}
	return ""
}

type testCluster struct {
	t     *testing.T
	bin   string
	nodes []*node
	peers string
}

func newCluster(t *testing.T, n int) *testCluster {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, bin: bin}
	var lns []net.Listener
	var peers []string
	free := func() int {
		ln := listenFixed(t)
		lns = append(lns, ln)
		return ln.Addr().(*net.TCPAddr).Port
	}
	addr := func() string { return "127.0.0.1:" + strconv.Itoa(free()) }
	for i := range n {
		// The peers must be known before any node starts: pick the route
		// ports first; the client listeners' too, so that a restarted
		// node is where its clients look for it.
		port := free()
		c.nodes = append(c.nodes, &node{name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), port: port,
			admin: addr(), amqp: addr(), mqtt: addr(), http: addr()})
		peers = append(peers, "127.0.0.1:"+strconv.Itoa(port))
	}
	for _, ln := range lns {
		ln.Close()
	}
	// Every node gets the same list, itself included (as a StatefulSet's
	// pods would).
	c.peers = strings.Join(peers, ",")
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.kill()
		}
	})
	return c
}

// startAcme starts a cluster of three nodes (args: further serve flags
// for each), waits until every node is ready, and makes tenant acme with
// its user app on node 1; it returns once the user can log in on every
// node (the user made on node 1 reaches the others' copies a moment
// later).
func startAcme(t *testing.T, args ...string) *testCluster {
	t.Helper()
	c := newCluster(t, 3)
	for _, nd := range c.nodes {
		nd.args = args
		c.start(nd)
	}
	for _, nd := range c.nodes {
		c.listening(nd)
		c.waitReady(nd)
	}
	n1 := c.nodes[0]
	c.api(n1, "POST", "/api/tenants", `{"name":"acme"}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/users", `{"name":"app","password":"`+appPW+`","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`, nil)
	for _, nd := range c.nodes[1:] {
		waitLogin(t, nd)
	}
	return c
}

// listenFixed listens on a free port below the kernel's ephemeral range.
// The nodes' ports are picked before the nodes start and released for
// them; a port from the ephemeral range (":0") was often taken meanwhile
// by one of the many outgoing connections the nodes make (routes), which
// the kernel gives ports from that range: the node then failed with
// "address already in use".
func listenFixed(t *testing.T) net.Listener {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low <= 11000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	for range 1000 {
		port := 10000 + rand.IntN(low-10000)
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			return ln
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return nil
}

// start starts the node's process; listening waits until its listeners
// are up (a node opens them once it has joined the cluster), waitReady
// for /readyz.
func (c *testCluster) start(nd *node) {
	t := c.t
	t.Helper()
	peers := c.peers
	if nd.peers != "" {
		peers = nd.peers
	}
	cmd := exec.Command(c.bin, "serve",
		"--data-dir", nd.dir,
		"--admin", nd.admin, "--amqp", nd.amqp, "--mqtt", nd.mqtt,
		"--amqps", "", "--mqtts", "", "--http", nd.http, "--https", "",
		"--log-format", "json",
		"--cluster-name", "test", "--cluster-listen", "127.0.0.1:"+strconv.Itoa(nd.port),
		"--peers", peers, "--node-name", nd.name)
	cmd.Args = append(cmd.Args, nd.args...)
	cmd.Env = append(os.Environ(), "THRONG_ADMIN_PASSWORD="+adminPW)
	if !nd.noSecret {
		cmd.Env = append(cmd.Env, "THRONG_CLUSTER_SECRET="+secret)
	}
	cmd.Env = append(cmd.Env, nd.env...)
	cmd.Stdout = nd.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	nd.cmd, nd.done = cmd, make(chan struct{})
	addrs := make(chan [2]string, 8)
	nd.addrs = addrs
	read := make(chan struct{}) // the log read to its end: Wait closes the pipe
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if nd.log != nil {
				nd.log.add(sc.Text())
			}
			nd.tail.add(sc.Text())
			if json.Unmarshal(sc.Bytes(), &line) == nil && strings.HasSuffix(line.Msg, " listening") {
				select { // never block the reading: Wait waits for it
				case addrs <- [2]string{strings.TrimSuffix(line.Msg, " listening"), line.Addr}:
				default:
				}
			}
			if os.Getenv("THRONG_TEST_LOG") != "" {
				os.Stderr.Write(append([]byte(nd.name+" "), append(sc.Bytes(), '\n')...))
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		<-read
		nd.waitErr = cmd.Wait()
		close(nd.done)
	}()
}

func (c *testCluster) listening(nd *node) {
	t := c.t
	t.Helper()
	addrs := nd.addrs
	timeout := time.After(startMax)
	up := map[string]bool{}
	for !up["admin"] || !up["amqp"] || !up["mqtt"] {
		select {
		case a := <-addrs:
			up[a[0]] = true
		case <-nd.done:
			t.Fatalf("%s exited: %v; its last log lines:\n%s", nd.name, nd.waitErr, &nd.tail)
		case <-timeout:
			t.Fatalf("%s: listeners not up within %s", nd.name, startMax)
		}
	}
}

func (nd *node) kill() {
	if nd.cmd == nil {
		return
	}
	select {
	case <-nd.done:
	default:
		_ = nd.cmd.Process.Signal(syscall.SIGKILL)
		<-nd.done
	}
}

// waitReady polls the node's /readyz until it answers 200.
func (c *testCluster) waitReady(nd *node) time.Duration {
	c.t.Helper()
	start := time.Now()
	for {
		resp, err := http.Get("http://" + nd.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		if time.Since(start) > startMax {
			c.t.Fatalf("%s not ready within %s: %v", nd.name, startMax, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// api calls the admin API of a node as the platform administrator.
func (c *testCluster) api(nd *node, method, path, body string, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+nd.admin+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.SetBasicAuth("admin", adminPW)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, nd.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		c.t.Fatalf("%s %s on %s: %d %s", method, path, nd.name, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

type status struct {
	Ready   bool `json:"ready"`
	Cluster *struct {
		Clustered  bool   `json:"clustered"`
		Node       string `json:"node"`
		MetaLeader string `json:"metaLeader"`
		Replicas   int    `json:"replicas"`
		Nodes      []struct {
			Name    string `json:"name"`
			Online  bool   `json:"online"`
			Current bool   `json:"current"`
		} `json:"nodes"`
		Routes []struct {
			Node string `json:"node"`
		} `json:"routes"`
	} `json:"cluster"`
}

// checkStatus checks that the node sees want nodes online and a leader.
func (c *testCluster) checkStatus(nd *node, online int) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st status
		c.api(nd, "GET", "/api/status", "", &st)
		n := 0
		if st.Cluster != nil {
			for _, x := range st.Cluster.Nodes {
				if x.Online {
					n++
				}
			}
		}
		if st.Ready && st.Cluster != nil && st.Cluster.Clustered && st.Cluster.Node == nd.name && st.Cluster.MetaLeader != "" && n == online {
			c.t.Logf("%s: meta leader %s, %d nodes online, %d routes, replicas %d", nd.name, st.Cluster.MetaLeader, n, len(st.Cluster.Routes), st.Cluster.Replicas)
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s status: %+v (want %d nodes online)", nd.name, st.Cluster, online)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func dialAMQP(t *testing.T, nd *node) *goamqp.Session {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	conn, err := goamqp.Dial(ctx, "amqp://"+nd.amqp, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(appUser, appPW)})
	if err != nil {
		t.Fatalf("amqp %s: %v", nd.name, err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tally counts deliveries by message body.
type tally struct {
	mu   sync.Mutex
	seen map[string]int
	by   map[string]int // deliveries per consumer
}

func newTally() *tally { return &tally{seen: map[string]int{}, by: map[string]int{}} }

func (c *tally) add(who, body string) {
	c.mu.Lock()
	c.seen[body]++
	c.by[who]++
	c.mu.Unlock()
}

// count returns how many of the bodies were delivered, and duplicates.
func (c *tally) count(bodies []string) (delivered, dups int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range bodies {
		if n := c.seen[b]; n > 0 {
			delivered++
			dups += n - 1
		}
	}
	return delivered, dups
}

func (c *tally) waitFor(t *testing.T, what string, bodies []string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		delivered, dups := c.count(bodies)
		if delivered == len(bodies) || time.Now().After(deadline) {
			c.mu.Lock()
			by := fmt.Sprint(c.by)
			c.mu.Unlock()
			t.Logf("%s: acknowledged %d, delivered %d, duplicates %d, lost %d (per consumer, all phases: %s)",
				what, len(bodies), delivered, dups, len(bodies)-delivered, by)
			if delivered != len(bodies) {
				t.Fatalf("%s: %d acknowledged messages lost", what, len(bodies)-delivered)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// receive accepts messages on r until ctx ends, counting them in c.
func receive(ctx context.Context, r *goamqp.Receiver, who string, c *tally) {
	for {
		m, err := r.Receive(ctx, nil)
		if err != nil {
			return
		}
		c.add(who, string(m.GetData()))
		if err := r.AcceptMessage(ctx, m); err != nil {
			return
		}
	}
}

// sendAll sends each body unsettled and returns those acknowledged
// (accepted). A send that fails (a stream leader moving after a node
// died) is retried, so a message may be stored twice: the tally counts
// duplicates.
func sendAll(t *testing.T, s *goamqp.Session, addr, prefix string, n int) (acked []string, retries int) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	snd, err := s.NewSender(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		body := fmt.Sprintf("%s-%d", prefix, i)
		for attempt := 0; ; attempt++ {
			// Accepted is the acknowledgement; released (no stream
			// leader for the moment) is a no, to send again.
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var state goamqp.DeliveryState
			receipt, err := snd.SendWithReceipt(sctx, goamqp.NewMessage([]byte(body)), nil)
			if err == nil {
				state, err = receipt.Wait(sctx)
			}
			cancel()
			if _, ok := state.(*goamqp.StateAccepted); ok && err == nil {
				acked = append(acked, body)
				break
			}
			if err == nil {
				err = fmt.Errorf("outcome %T", state)
			}
			if attempt == 60 || ctx.Err() != nil {
				t.Fatalf("send %s: %v", body, err)
			}
			retries++
			time.Sleep(500 * time.Millisecond)
			var de *goamqp.LinkError
			if errors.As(err, &de) {
				if snd, err = s.NewSender(ctx, addr, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return acked, retries
}

func dialMQTT(t *testing.T, nd *node, id string, onMsg func(*paho.Publish)) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", nd.mqtt, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{ClientID: id, Conn: conn}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			onMsg(pr.Packet)
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	ack, err := c.Connect(ctxT(t, 30*time.Second), &paho.Connect{
		ClientID: id, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW),
	})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("mqtt connect to %s: %v %+v", nd.name, err, ack)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// tryMQTT connects; on failure it returns nil, or fails the test if last.
func tryMQTT(t *testing.T, nd *node, id string, last bool) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", nd.mqtt, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{
		ClientID: id, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW),
	})
	if err != nil || ack.ReasonCode != 0 {
		conn.Close()
		if last {
			t.Fatalf("mqtt connect to %s: %v %+v", nd.name, err, ack)
		}
		t.Logf("mqtt connect to %s: %v (trying again)", nd.name, err)
		return nil
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func publishAll(t *testing.T, c *paho.Client, topic, prefix string, n int) []string {
	t.Helper()
	var acked []string
	for i := range n {
		body := fmt.Sprintf("%s-%d", prefix, i)
		for attempt := 0; ; attempt++ {
			// A refusing PUBACK (no leader for a stream the message goes
			// to, right after a node failed) is a no: the message was
			// not taken, and a client sends it again, as for AMQP's
			// released in sendAll.
			_, err := c.Publish(ctxT(t, 10*time.Second), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(body)})
			if err == nil {
				break
			}
			if attempt == 60 {
				t.Fatalf("publish %s: %v", body, err)
			}
			t.Logf("publish %s refused (attempt %d), sending again: %v", body, attempt+1, err)
			time.Sleep(500 * time.Millisecond)
		}
		acked = append(acked, body)
	}
	return acked
}

// TestThreeNodes (issue 16, phase 1): three `throng serve` processes form
// a cluster; a tenant created on node 1 is usable on the others; an MQTT
// QoS 1 subscriber on node 2 gets what is published on node 1 (live,
// through the engine); AMQP consumers on nodes 2 and 3 share a queue fed
// on node 1; with node 1 killed (-9) the others keep working, and node 1
// restarted catches up: the messages acknowledged meanwhile are
// delivered from it. Counts are logged.
func TestThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	began := time.Now()
	c := newCluster(t, 3)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	for _, nd := range c.nodes {
		c.start(nd)
	}
	for _, nd := range c.nodes {
		c.listening(nd)
		d := c.waitReady(nd)
		t.Logf("%s ready after %s", nd.name, d.Round(time.Millisecond))
	}
	for _, nd := range c.nodes {
		c.checkStatus(nd, 3)
	}
	// `throng status` shows the same: the nodes with their roles, the
	// routes to the two others.
	out, err := exec.Command(c.bin, "status", "--server", "http://"+n1.admin, "--password", adminPW).CombinedOutput()
	if err != nil {
		t.Fatalf("throng status: %v\n%s", err, out)
	}
	for _, want := range []string{"cluster test, node n1, meta leader n", "NODE", "n1 (this node)", "ROUTE TO", "configured"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("throng status lacks %q:\n%s", want, out)
		}
	}
	for _, nd := range c.nodes[1:] {
		if !regexp.MustCompile(`(?m)^`+nd.name+`\s+(leader|follower)\s+online\s`).Match(out) ||
			!regexp.MustCompile(`(?m)^`+nd.name+`\s+127\.0\.0\.1:`).Match(out) {
			t.Fatalf("throng status: %s not listed as an online node with a route:\n%s", nd.name, out)
		}
	}
	t.Logf("throng status:\n%s", out)

	// A tenant, its user and two queues, all created on node 1.
	c.api(n1, "POST", "/api/tenants", `{"name":"acme"}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/users", `{"name":"app","password":"`+appPW+`","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"queue"}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/addresses", `{"name":"backlog","type":"queue"}`, nil)

	// The tenant is usable on node 3: its user logs in there (the
	// replicated registry), and the queue defined on node 1 takes a
	// message there.
	var s3 *goamqp.Session
	deadline := time.Now().Add(20 * time.Second)
	for s3 == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := goamqp.Dial(ctx, "amqp://"+n3.amqp, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(appUser, appPW)})
		cancel()
		if err == nil {
			conn.Close()
			s3 = dialAMQP(t, n3)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tenant's user cannot log in on node 3: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s2 := dialAMQP(t, n2)

	// Queue consumers on nodes 2 and 3.
	queue := newTally()
	rctx, stopReceivers := context.WithCancel(context.Background())
	defer stopReceivers()
	var rwg sync.WaitGroup
	for _, x := range []struct {
		who string
		s   *goamqp.Session
	}{{"n2", s2}, {"n3", s3}} {
		r, err := x.s.NewReceiver(ctxT(t, 30*time.Second), "orders", &goamqp.ReceiverOptions{Credit: 20})
		if err != nil {
			t.Fatalf("receiver on %s: %v", x.who, err)
		}
		rwg.Go(func() { receive(rctx, r, x.who, queue) })
	}

	// An MQTT QoS 1 subscriber on node 2, a publisher on node 1. The
	// subscription reaches node 1 over the routes shortly after its
	// SUBACK: probes go first until one arrives.
	live := newTally()
	sub := dialMQTT(t, n2, "sub-n2", func(p *paho.Publish) { live.add("sub-n2", string(p.Payload)) })
	if _, err := sub.Subscribe(ctxT(t, 30*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub1 := dialMQTT(t, n1, "pub-n1", nil)
	probeDeadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		publishAll(t, pub1, "sensors/probe", "probe"+strconv.Itoa(i), 1)
		if d, _ := live.count([]string{"probe" + strconv.Itoa(i) + "-0"}); d == 1 {
			break
		}
		if time.Now().After(probeDeadline) {
			t.Fatal("no live message from node 1 reached the subscriber on node 2")
		}
		time.Sleep(100 * time.Millisecond)
	}
	const n = 200
	live.waitFor(t, "mqtt qos1 n1→n2", publishAll(t, pub1, "sensors/a", "m1", n), 30*time.Second)

	// The queue, fed on node 1.
	s1 := dialAMQP(t, n1)
	acked, retries := sendAll(t, s1, "orders", "q1", n)
	queue.waitFor(t, fmt.Sprintf("amqp queue n1→n2,n3 (%d resends)", retries), acked, 30*time.Second)
	queue.mu.Lock()
	shared := queue.by["n2"] > 0 && queue.by["n3"] > 0
	queue.mu.Unlock()
	if !shared {
		t.Errorf("one queue consumer got everything: %v", queue.by)
	}

	// The backlog queue's stream is created on first use, which needs
	// all three nodes (R3): one message goes in before the kill.
	backlog, _ := sendAll(t, s3, "backlog", "b-first", 1)

	// kill -9 node 1: the others keep working.
	killed := time.Now()
	n1.kill()
	t.Logf("node 1 killed at %s", killed.Sub(began).Round(time.Millisecond))
	acked2, retries2 := sendAll(t, s2, "orders", "q2", n)
	defer func() {
		if t.Failed() {
			var a map[string]any
			c.api(n2, "GET", "/api/tenants/acme/addresses/orders", "", &a)
			t.Logf("orders on n2: %v", a["stats"])
		}
	}()
	queue.waitFor(t, fmt.Sprintf("amqp queue n2→n2,n3 after kill (%d resends)", retries2), acked2, 30*time.Second)
	t.Logf("queue working again %s after the kill", time.Since(killed).Round(time.Millisecond))
	// Right after the kill the session store's stream may be without a
	// leader for some seconds (an election): a client tries again, as
	// real ones do.
	var pub3 *paho.Client
	for retryUntil := time.Now().Add(30 * time.Second); pub3 == nil; {
		if pub3 = tryMQTT(t, n3, "pub-n3", time.Now().After(retryUntil)); pub3 == nil {
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("mqtt connect to node 3 worked %s after the kill", time.Since(killed).Round(time.Millisecond))
	live.waitFor(t, "mqtt qos1 n3→n2 after kill", publishAll(t, pub3, "sensors/b", "m3", n), 30*time.Second)
	// Acknowledged while node 1 is down, consumed from node 1 later.
	more, retries3 := sendAll(t, s3, "backlog", "b", n)
	backlog = append(backlog, more...)
	t.Logf("backlog: %d acknowledged while node 1 was down (%d resends)", len(more), retries3)

	// Node 1 restarted catches up.
	restarted := time.Now()
	c.start(n1)
	c.listening(n1)
	d := c.waitReady(n1)
	t.Logf("node 1 ready %s after its restart", d.Round(time.Millisecond))
	c.checkStatus(n1, 3)
	t.Logf("node 1 back in the cluster %s after its restart", time.Since(restarted).Round(time.Millisecond))
	s1 = dialAMQP(t, n1)
	late := newTally()
	r1, err := s1.NewReceiver(ctxT(t, 30*time.Second), "backlog", &goamqp.ReceiverOptions{Credit: 50})
	if err != nil {
		t.Fatal(err)
	}
	rwg.Go(func() { receive(rctx, r1, "n1", late) })
	late.waitFor(t, "amqp backlog acknowledged on n3 while n1 was down, consumed on n1", backlog, 30*time.Second)

	stopReceivers()
	rwg.Wait()
	all := append(append([]string{}, acked...), acked2...)
	delivered, dups := queue.count(all)
	t.Logf("totals: queue sent %d acknowledged %d delivered %d duplicates %d lost %d; backlog acknowledged %d delivered %d; took %s",
		len(all), len(all), delivered, dups, len(all)-delivered, len(backlog), len(backlog), time.Since(began).Round(time.Millisecond))
}
