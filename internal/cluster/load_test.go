package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// Steady load for the failure tests: each client is its own connection,
// as an application's would be, with a home node and the list of all
// nodes to fail over to (the next one, then the one after), as a client
// configured with several hosts does. A client that loses its connection
// (node killed, stopped, shut down) or whose operation times out tries the
// next node at once and sends again what was not acknowledged: a message
// may then be stored twice, and the tallies count duplicates.

const (
	loadInterval = 40 * time.Millisecond // per producer: about 25 messages/s
	// opTimeout: a publish or send without an answer counts as a failed
	// connection. Longer than the router's wait for a stream leader
	// (router/publish.go leaderWait, 10 s).
	opTimeout   = 15 * time.Second
	dialTimeout = 3 * time.Second
	// mqttConnectWait: how long an MQTT client waits for its CONNACK.
	mqttConnectWait = 16 * time.Second
	// clientIdle is the idle timeout of the AMQP clients and the MQTT
	// keep-alive: it is how a client notices a stopped node.
	clientIdle = 5 * time.Second
)

// load is the set of clients of one test.
type load struct {
	t      *testing.T
	c      *testCluster
	ctx    context.Context // every client's
	cancel context.CancelFunc
	pctx   context.Context // the producers': ends first, the receivers drain
	pstop  context.CancelFunc
	wg     sync.WaitGroup // every client
	pwg    sync.WaitGroup // the producers

	mqttIn  *tally // MQTT deliveries to the persistent-session subscriber
	queueIn *tally // AMQP deliveries from the queue

	pubs      []*client // MQTT QoS 1 publishers
	senders   []*client // AMQP senders (unsettled)
	posters   []*client // HTTP publishers (POST …/messages) into the queue
	consumers []*client // AMQP queue receivers
	sub       *client   // MQTT persistent-session subscriber
}

// client is one load client's record.
type client struct {
	name string
	home int

	mu         sync.Mutex
	node       string    // connected to; "" while not connected
	lastOK     time.Time // last acknowledged publish, or (consumers) connection made
	sent       int       // publish attempts (a resend counts again)
	acked      []string  // bodies acknowledged to this producer
	refused    int       // refusing outcomes (PUBACK ≥ 0x80, AMQP released/rejected/modified)
	unknown    int       // attempts whose outcome the client never learnt (connection lost)
	failovers  []failover
	sessLost   int // subscriber: a reconnection without its session
	connects   int
	connectErr string // last refused connect, for the log
}

type failover struct {
	at       time.Time // connection lost
	from, to string
	took     time.Duration // until connected to another node
}

func (cl *client) connected(node string, lost time.Time, from string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.node = node
	cl.connects++
	if !lost.IsZero() {
		cl.failovers = append(cl.failovers, failover{at: lost, from: from, to: node, took: time.Since(lost)})
	}
}

func (cl *client) disconnected() {
	cl.mu.Lock()
	cl.node = ""
	cl.mu.Unlock()
}

func (cl *client) ok(body string) {
	cl.mu.Lock()
	cl.sent++
	if body != "" {
		cl.acked = append(cl.acked, body)
	}
	cl.lastOK = time.Now()
	cl.mu.Unlock()
}

func (cl *client) count(refused bool) {
	cl.mu.Lock()
	cl.sent++
	if refused {
		cl.refused++
	} else {
		cl.unknown++
	}
	cl.mu.Unlock()
}

func newLoad(t *testing.T, c *testCluster) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, c: c, ctx: ctx, cancel: cancel, mqttIn: newTally(), queueIn: newTally()}
	l.pctx, l.pstop = context.WithCancel(ctx)
	t.Cleanup(l.stop)
	return l
}

// stop ends every client and waits for them.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) run(producer bool, f func()) {
	l.wg.Add(1)
	if producer {
		l.pwg.Add(1)
	}
	go func() {
		defer l.wg.Done()
		if producer {
			defer l.pwg.Done()
		}
		f()
	}()
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// ---- MQTT

// mqttConn connects an MQTT 5 client; on failure it returns nil.
func mqttConn(ctx context.Context, nd *node, id string, clean bool, expiry uint32, will *paho.WillMessage, onMsg func(*paho.Publish), manual bool) (*paho.Client, net.Conn, *paho.Connack, error) {
	conn, err := net.DialTimeout("tcp", nd.mqtt, dialTimeout)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg := paho.ClientConfig{ClientID: id, Conn: conn, EnableManualAcknowledgment: manual}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			onMsg(pr.Packet)
			return true, nil
		}}
	}
	cl := paho.NewClient(cfg)
	// As patient as the server's own handling of a CONNECT (15 s): right
	// after a node's failure, resuming a session waits for the old
	// node's lease or takeover and for elections (real clients wait 30 s
	// and more).
	cctx, cancel := context.WithTimeout(ctx, mqttConnectWait)
	defer cancel()
	cp := &paho.Connect{
		ClientID: id, CleanStart: clean, KeepAlive: uint16(clientIdle / time.Second),
		UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW),
		WillMessage: will,
	}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ack, err := cl.Connect(cctx, cp)
	if err == nil && ack.ReasonCode != 0 {
		err = fmt.Errorf("CONNACK %#x", ack.ReasonCode)
	}
	if err != nil {
		conn.Close()
		return nil, nil, ack, err
	}
	return cl, conn, ack, nil
}

// mqttPublisher publishes QoS 1 on topic/<name> until the load stops.
func (l *load) mqttPublisher(name string, home int, topic string) *client {
	cl := &client{name: name, home: home}
	l.pubs = append(l.pubs, cl)
	l.run(true, func() {
		ctx := l.pctx
		nodes := l.c.nodes
		i := home
		var mc *paho.Client
		var conn net.Conn
		var lost time.Time
		var from string
		body := ""
		for seq := 0; ctx.Err() == nil; {
			if mc == nil {
				nd := nodes[i]
				var err error
				if mc, conn, _, err = mqttConn(ctx, nd, name, true, 0, nil, nil, false); err != nil {
					cl.mu.Lock()
					cl.connectErr = nd.name + ": " + err.Error()
					cl.mu.Unlock()
					i = (i + 1) % len(nodes)
					sleep(ctx, 200*time.Millisecond)
					continue
				}
				cl.connected(nd.name, lost, from)
				from = nd.name
			}
			if body == "" {
				body = fmt.Sprintf("%s-%d", name, seq)
				seq++
			}
			pctx, cancel := context.WithTimeout(ctx, opTimeout)
			pr, err := mc.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(body)})
			cancel()
			switch {
			case err == nil:
				cl.ok(body)
				body = ""
				sleep(ctx, loadInterval)
			case ctx.Err() != nil:
				cl.count(false)
			case pr != nil && pr.ReasonCode >= 0x80:
				// Refused: not taken; sent again on the same connection.
				cl.count(true)
				l.t.Logf("%s: publish %s refused on %s: %v", name, body, from, err)
				sleep(ctx, 200*time.Millisecond)
			default:
				cl.count(false)
				lost = time.Now()
				cl.disconnected()
				conn.Close()
				mc = nil
				i = (i + 1) % len(nodes)
			}
		}
		if mc != nil {
			_ = mc.Disconnect(&paho.Disconnect{})
		}
	})
	return cl
}

// mqttSubscriber keeps a persistent session (expiry 1 h) subscribed to
// filter, reconnecting to the next node whenever its connection ends. A
// reconnection must find the session (CONNACK session present) and is
// not subscribed again: the queued and unacknowledged messages and the
// subscription must come with the session.
func (l *load) mqttSubscriber(name string, home int, filter string, subscribed chan<- struct{}) *client {
	cl := &client{name: name, home: home}
	l.sub = cl
	l.run(false, func() {
		nodes := l.c.nodes
		i := home
		first := true
		var lost time.Time
		var from string
		for l.ctx.Err() == nil {
			nd := nodes[i]
			mc, conn, ack, err := mqttConn(l.ctx, nd, name, first, 3600, nil, func(p *paho.Publish) {
				l.mqttIn.add(name, string(p.Payload))
			}, false)
			if err != nil {
				cl.mu.Lock()
				cl.connectErr = nd.name + ": " + err.Error()
				cl.mu.Unlock()
				i = (i + 1) % len(nodes)
				sleep(l.ctx, 200*time.Millisecond)
				continue
			}
			if first || !ack.SessionPresent {
				if !first {
					cl.mu.Lock()
					cl.sessLost++
					cl.mu.Unlock()
					l.t.Errorf("%s: session lost: reconnected to %s without it", name, nd.name)
				}
				sctx, cancel := context.WithTimeout(l.ctx, opTimeout)
				_, err := mc.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
				cancel()
				if err != nil {
					conn.Close()
					sleep(l.ctx, 200*time.Millisecond)
					continue
				}
				if first {
					close(subscribed)
				}
				first = false
			}
			cl.connected(nd.name, lost, from)
			from = nd.name
			select {
			case <-mc.Done():
				lost = time.Now()
				cl.disconnected()
				conn.Close()
				i = (i + 1) % len(nodes)
			case <-l.ctx.Done():
				_ = mc.Disconnect(&paho.Disconnect{})
				conn.Close()
				return
			}
		}
	})
	return cl
}

func dialConn(nd *node) (net.Conn, error) { return net.DialTimeout("tcp", nd.mqtt, dialTimeout) }

// ---- AMQP

func amqpConn(ctx context.Context, nd *node) (*goamqp.Conn, *goamqp.Session, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout+2*time.Second)
	defer cancel()
	conn, err := goamqp.Dial(dctx, "amqp://"+nd.amqp, &goamqp.ConnOptions{
		SASLType: goamqp.SASLTypePlain(appUser, appPW), IdleTimeout: clientIdle,
	})
	if err != nil {
		return nil, nil, err
	}
	s, err := conn.NewSession(dctx, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, s, nil
}

// amqpSender sends unsettled messages to addr until the load stops; only
// an accepted outcome is an acknowledgement.
func (l *load) amqpSender(name string, home int, addr string) *client {
	cl := &client{name: name, home: home}
	l.senders = append(l.senders, cl)
	l.run(true, func() {
		ctx := l.pctx
		nodes := l.c.nodes
		i := home
		var conn *goamqp.Conn
		var snd *goamqp.Sender
		var lost time.Time
		var from string
		body := ""
		for seq := 0; ctx.Err() == nil; {
			if snd == nil {
				nd := nodes[i]
				var s *goamqp.Session
				var err error
				if conn, s, err = amqpConn(ctx, nd); err == nil {
					sctx, cancel := context.WithTimeout(ctx, opTimeout)
					snd, err = s.NewSender(sctx, addr, nil)
					cancel()
					if err != nil {
						conn.Close()
					}
				}
				if err != nil {
					cl.mu.Lock()
					cl.connectErr = nd.name + ": " + err.Error()
					cl.mu.Unlock()
					snd = nil
					i = (i + 1) % len(nodes)
					sleep(ctx, 200*time.Millisecond)
					continue
				}
				cl.connected(nd.name, lost, from)
				from = nd.name
			}
			if body == "" {
				body = fmt.Sprintf("%s-%d", name, seq)
				seq++
			}
			sctx, cancel := context.WithTimeout(ctx, opTimeout)
			var state goamqp.DeliveryState
			receipt, err := snd.SendWithReceipt(sctx, goamqp.NewMessage([]byte(body)), nil)
			if err == nil {
				state, err = receipt.Wait(sctx)
			}
			cancel()
			_, accepted := state.(*goamqp.StateAccepted)
			switch {
			case err == nil && accepted:
				cl.ok(body)
				body = ""
				sleep(ctx, loadInterval)
			case ctx.Err() != nil:
				cl.count(false)
			case err == nil:
				// Released (not stored: no leader for the stream) or
				// another refusal: sent again.
				cl.count(true)
				l.t.Logf("%s: send %s on %s: outcome %T %+v", name, body, from, state, state)
				sleep(ctx, 200*time.Millisecond)
			default:
				cl.count(false)
				lost = time.Now()
				cl.disconnected()
				conn.Close()
				snd = nil
				i = (i + 1) % len(nodes)
			}
		}
		if conn != nil {
			conn.Close()
		}
	})
	return cl
}

// httpPublisher posts messages to addr with the platform's HTTP
// messaging API (POST /api/v1/addresses/{addr}/messages) until the load
// stops; only 201 (outcome stored) is an acknowledgement. An answer
// that says not stored (4xx, 5xx) is a refusal, sent again; a request
// without an answer (connection refused or broken, timeout) has an
// unknown outcome and is sent again to the next node.
func (l *load) httpPublisher(name string, home int, addr string) *client {
	cl := &client{name: name, home: home}
	l.posters = append(l.posters, cl)
	l.run(true, func() {
		ctx := l.pctx
		nodes := l.c.nodes
		i := home
		// Its own connections (keep-alive to one node at a time), not
		// the default client's.
		hc := &http.Client{Transport: &http.Transport{}, Timeout: opTimeout}
		defer hc.CloseIdleConnections()
		var lost time.Time
		from := ""
		body := ""
		for seq := 0; ctx.Err() == nil; {
			nd := nodes[i]
			if body == "" {
				body = fmt.Sprintf("%s-%d", name, seq)
				seq++
			}
			req, err := http.NewRequestWithContext(ctx, "POST", "http://"+nd.http+"/api/v1/addresses/"+addr+"/messages", strings.NewReader(body))
			if err != nil {
				l.t.Error(err)
				return
			}
			req.SetBasicAuth(appUser, appPW)
			req.Header.Set("Content-Type", "text/plain")
			resp, err := hc.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			switch {
			case err == nil && resp.StatusCode == http.StatusCreated:
				if from != nd.name {
					cl.connected(nd.name, lost, from)
					from, lost = nd.name, time.Time{}
				}
				cl.ok(body)
				body = ""
				sleep(ctx, loadInterval)
			case ctx.Err() != nil:
				cl.count(false)
			case err == nil:
				cl.count(true)
				l.t.Logf("%s: POST %s on %s: %d", name, body, nd.name, resp.StatusCode)
				sleep(ctx, 200*time.Millisecond)
			default:
				cl.count(false)
				cl.mu.Lock()
				cl.connectErr = nd.name + ": " + err.Error()
				cl.mu.Unlock()
				if from != "" && lost.IsZero() {
					lost = time.Now()
					cl.disconnected()
				}
				hc.CloseIdleConnections()
				i = (i + 1) % len(nodes)
				sleep(ctx, 50*time.Millisecond)
			}
		}
	})
	return cl
}

// amqpConsumer receives from addr, accepting every message.
func (l *load) amqpConsumer(name string, home int, addr string) *client {
	cl := &client{name: name, home: home}
	l.consumers = append(l.consumers, cl)
	l.run(false, func() {
		nodes := l.c.nodes
		i := home
		var lost time.Time
		var from string
		for l.ctx.Err() == nil {
			nd := nodes[i]
			conn, s, err := amqpConn(l.ctx, nd)
			var r *goamqp.Receiver
			if err == nil {
				sctx, cancel := context.WithTimeout(l.ctx, opTimeout)
				r, err = s.NewReceiver(sctx, addr, &goamqp.ReceiverOptions{Credit: 20})
				cancel()
				if err != nil {
					conn.Close()
				}
			}
			if err != nil {
				cl.mu.Lock()
				cl.connectErr = nd.name + ": " + err.Error()
				cl.mu.Unlock()
				i = (i + 1) % len(nodes)
				sleep(l.ctx, 200*time.Millisecond)
				continue
			}
			cl.connected(nd.name, lost, from)
			cl.ok("")
			from = nd.name
			for {
				m, err := r.Receive(l.ctx, nil)
				if err == nil {
					l.queueIn.add(name, string(m.GetData()))
					err = r.AcceptMessage(l.ctx, m)
				}
				if err != nil {
					break
				}
			}
			conn.Close()
			if l.ctx.Err() != nil {
				return
			}
			lost = time.Now()
			cl.disconnected()
			i = (i + 1) % len(nodes)
		}
	})
	return cl
}

// ---- checks

// producers are the clients whose acknowledged messages are counted.
func (l *load) producers() []*client {
	return append(append(append([]*client{}, l.pubs...), l.senders...), l.posters...)
}

// waitFlowing waits until every producer had a message acknowledged after
// since (and every consumer and the subscriber is connected), and returns
// how long after since that was.
func (l *load) waitFlowing(what string, since time.Time, bound time.Duration) time.Duration {
	l.t.Helper()
	deadline := since.Add(bound)
	for {
		var waiting []string
		for _, cl := range l.producers() {
			cl.mu.Lock()
			if !cl.lastOK.After(since) {
				waiting = append(waiting, cl.name+" ("+cl.connectErr+")")
			}
			cl.mu.Unlock()
		}
		for _, cl := range append(append([]*client{}, l.consumers...), l.sub) {
			if cl == nil {
				continue
			}
			cl.mu.Lock()
			if cl.node == "" {
				waiting = append(waiting, cl.name+" (not connected: "+cl.connectErr+")")
			}
			cl.mu.Unlock()
		}
		if len(waiting) == 0 {
			d := time.Since(since)
			var moved []string
			for _, cl := range l.all() {
				cl.mu.Lock()
				for _, f := range cl.failovers {
					if f.at.After(since) {
						moved = append(moved, fmt.Sprintf("%s %s→%s after %s", cl.name, f.from, f.to, (f.at.Sub(since)+f.took).Round(time.Millisecond)))
					}
				}
				cl.mu.Unlock()
			}
			l.t.Logf("%s: every client working again %s after it (moved: %s)", what, d.Round(time.Millisecond), strings.Join(moved, ", "))
			return d
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: clients not working again within %s: %s", what, bound, strings.Join(waiting, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counts are the totals of one kind of traffic.
type counts struct {
	sent, acked, delivered, dups, lost, refused, unknown int
}

func (k counts) String() string {
	return fmt.Sprintf("sent %d, acknowledged %d, delivered %d, duplicates %d, lost %d (refused %d, outcome unknown %d)",
		k.sent, k.acked, k.delivered, k.dups, k.lost, k.refused, k.unknown)
}

func total(cls []*client, in *tally) (k counts, acked []string) {
	for _, cl := range cls {
		cl.mu.Lock()
		k.sent += cl.sent
		k.refused += cl.refused
		k.unknown += cl.unknown
		acked = append(acked, cl.acked...)
		cl.mu.Unlock()
	}
	k.acked = len(acked)
	k.delivered, k.dups = in.count(acked)
	k.lost = k.acked - k.delivered
	return k, acked
}

// finish stops the producers' clients, waits until every acknowledged
// message is delivered (up to drain: deliveries in progress on a killed
// node come back after the engine's ack wait, 30 s), stops the rest and
// logs and returns the counts.
func (l *load) finish(drain time.Duration) (mqtt, queue counts) {
	l.t.Helper()
	l.pstop()
	l.pwg.Wait()
	deadline := time.Now().Add(drain)
	for {
		mqtt, _ = total(l.pubs, l.mqttIn)
		queue, _ = total(l.senders, l.queueIn)
		web, _ := total(l.posters, l.queueIn)
		if (mqtt.lost == 0 && queue.lost == 0 && web.lost == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.stop()
	mqtt, ackedM := total(l.pubs, l.mqttIn)
	queue, ackedQ := total(l.senders, l.queueIn)
	web, ackedW := total(l.posters, l.queueIn)
	l.t.Logf("MQTT QoS 1 → persistent session: %s", mqtt)
	l.t.Logf("AMQP queue: %s", queue)
	if len(l.posters) > 0 {
		l.t.Logf("HTTP POST → queue: %s", web)
	}
	if web.lost > 0 {
		l.t.Errorf("HTTP: %d acknowledged (201) messages lost, e.g. %v", web.lost, missing(ackedW, l.queueIn, 5))
	}
	for _, cl := range l.all() {
		cl.mu.Lock()
		var fo []string
		for _, f := range cl.failovers {
			fo = append(fo, fmt.Sprintf("%s→%s %s", f.from, f.to, f.took.Round(time.Millisecond)))
		}
		l.t.Logf("  %s (home n%d): sent %d, acknowledged %d, refused %d, unknown %d, connections %d, failovers [%s]",
			cl.name, cl.home+1, cl.sent, len(cl.acked), cl.refused, cl.unknown, cl.connects, strings.Join(fo, ", "))
		cl.mu.Unlock()
	}
	if mqtt.lost > 0 {
		l.t.Errorf("MQTT: %d acknowledged messages lost, e.g. %v", mqtt.lost, missing(ackedM, l.mqttIn, 5))
	}
	if queue.lost > 0 {
		l.t.Errorf("AMQP queue: %d acknowledged messages lost, e.g. %v", queue.lost, missing(ackedQ, l.queueIn, 5))
	}
	if l.sub != nil {
		l.sub.mu.Lock()
		lost := l.sub.sessLost
		l.sub.mu.Unlock()
		if lost > 0 {
			l.t.Errorf("the persistent session was lost %d times", lost)
		}
	}
	return mqtt, queue
}

func (l *load) all() []*client {
	out := l.producers()
	out = append(out, l.consumers...)
	if l.sub != nil {
		out = append(out, l.sub)
	}
	return out
}

func missing(acked []string, in *tally, n int) []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for _, b := range acked {
		if in.seen[b] == 0 {
			out = append(out, b)
		}
	}
	sort.Strings(out)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// ---- node control

// signal sends sig to the node's running process.
func (nd *node) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := nd.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v: %v", nd.name, sig, err)
	}
}

// shutdown stops the node gracefully (SIGTERM) and waits for its exit.
func (nd *node) shutdown(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	nd.signal(t, syscall.SIGTERM)
	select {
	case <-nd.done:
	case <-time.After(d):
		t.Fatalf("%s did not stop within %s of SIGTERM", nd.name, d)
	}
	var ee *exec.ExitError
	if nd.waitErr != nil && !errors.As(nd.waitErr, &ee) {
		t.Fatalf("%s: %v", nd.name, nd.waitErr)
	}
	return time.Since(start)
}

// restart starts a stopped node again on its data directory and waits
// until it is ready and sees want nodes online.
func (c *testCluster) restart(nd *node, online int) (ready time.Duration) {
	c.t.Helper()
	start := time.Now()
	c.start(nd)
	c.listening(nd)
	c.waitReady(nd)
	ready = time.Since(start)
	c.checkStatus(nd, online)
	return ready
}

// startAll starts the nodes and waits until all are ready and see each
// other; then creates the tenant acme, its user and queue orders.
func (c *testCluster) startAll() {
	t := c.t
	t.Helper()
	for _, nd := range c.nodes {
		c.start(nd)
	}
	for _, nd := range c.nodes {
		c.listening(nd)
		c.waitReady(nd)
	}
	for _, nd := range c.nodes {
		c.checkStatus(nd, len(c.nodes))
	}
	n1 := c.nodes[0]
	c.api(n1, "POST", "/api/tenants", `{"name":"acme"}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/users", `{"name":"app","password":"`+appPW+`","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"queue"}`, nil)
	// The user is known on every node (replicated store) before clients
	// log in there.
	for _, nd := range c.nodes {
		deadline := time.Now().Add(20 * time.Second)
		for {
			conn, _, err := amqpConn(context.Background(), nd)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the tenant's user cannot log in on %s: %v", nd.name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
