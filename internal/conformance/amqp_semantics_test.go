// Conformance tests of issue 10's AMQP items 1-3 and 5-7 (and the dead
// letter properties found by this suite): they failed before the router's
// feed rewrite, the chunked store and the AMQP size headroom.
package conformance

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
)

// TestAMQPCompetingConsumersMixedCredit (issue 10 item 1): messages go
// only to a consumer with credit for them. A (credit 5) gets 5 of 20;
// B, attaching later with credit 15, gets the other 15 at once.
func TestAMQPCompetingConsumersMixedCredit(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "mixed/q")
	a := proton(t, p, "A")
	a.do("receiver", m{"link": "r", "address": "mixed/q", "credit": 5})
	s := proton(t, p, "sender")
	sendN(t, s, "mixed/q", "w", 20, true)
	ga := a.do("receive", m{"link": "r", "count": 5})
	if len(ga.Messages) != 5 {
		t.Fatalf("A (credit 5) got %d: %v", len(ga.Messages), bodies(ga.Messages))
	}
	b := proton(t, p, "B")
	b.do("receiver", m{"link": "r", "address": "mixed/q", "credit": 15})
	gb := b.do("receive", m{"link": "r", "count": 15, "timeout": 5})
	if len(gb.Messages) != 15 {
		t.Fatalf("B (credit 15, attached after A took 5 of 20) got %d within 5s: %v", len(gb.Messages), bodies(gb.Messages))
	}
	if all := append(bodies(ga.Messages), bodies(gb.Messages)...); !sameSet(all, names("w", 0, 20)) {
		t.Fatalf("A and B got %v", all)
	}
}

// TestAMQPFairDispatch (issue 10 item 2): three receivers on one
// connection with credit 60 each; 60 messages from another connection
// spread over them (round robin among consumers with credit).
func TestAMQPFairDispatch(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "fair/q")
	r := proton(t, p, "receivers")
	for _, l := range []string{"r1", "r2", "r3"} {
		r.do("receiver", m{"link": l, "address": "fair/q", "credit": 60})
	}
	s := proton(t, p, "sender")
	sendN(t, s, "fair/q", "f", 60, true)
	got := r.do("receive_many", m{"links": []string{"r1", "r2", "r3"}, "count": 60, "timeout": 10})
	var all []string
	shares := map[string]int{}
	for l, bs := range got.PerLink {
		shares[l] = len(bs)
		all = append(all, bs...)
	}
	if !sameSet(all, names("f", 0, 60)) {
		t.Fatalf("received %d: %v", len(all), sorted(all))
	}
	for _, l := range []string{"r1", "r2", "r3"} {
		if shares[l] < 15 || shares[l] > 25 {
			t.Errorf("unfair dispatch: shares %v; want each of r1, r2, r3 between 15 and 25", shares)
			break
		}
	}
}

// TestAMQPDrain (issue 10 item 3): a receiver that attaches and at once
// flows credit 5 with drain=true gets what the address holds, then the
// drain completion, for every address type; an empty address answers the
// drain at once.
func TestAMQPDrain(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "drain/q", "drain/empty")
	define(t, p, &address.Address{Name: "drain/any", Type: address.Anycast})
	define(t, p, &address.Address{Name: "drain/t", Type: address.Topic})
	define(t, p, &address.Address{Name: "drain/t2", Type: address.Topic})
	define(t, p, &address.Address{Name: "drain/sub", Type: address.Subscription, Topic: "drain/t2"})
	s := proton(t, p, "sender")

	check := func(t *testing.T, got result, want []string) {
		t.Helper()
		if !got.Drained || got.Credit != 0 {
			t.Errorf("drain not completed: drained=%v credit=%d", got.Drained, got.Credit)
		}
		if bs := bodies(got.Messages); strings.Join(bs, ",") != strings.Join(want, ",") {
			t.Errorf("drain delivered %v; want %v then the drain completion", bs, want)
		}
	}
	t.Run("queue_holding_2", func(t *testing.T) {
		sendN(t, s, "drain/q", "q", 2, false)
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "drain/q", "credit": 5, "drain": true})
		check(t, r.do("wait_drain", m{"link": "r", "timeout": 5}), []string{"q0", "q1"})
	})
	t.Run("queue_empty", func(t *testing.T) {
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "drain/empty", "credit": 5, "drain": true})
		check(t, r.do("wait_drain", m{"link": "r", "timeout": 5}), nil)
	})
	t.Run("anycast_empty", func(t *testing.T) {
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "drain/any", "credit": 5, "drain": true})
		check(t, r.do("wait_drain", m{"link": "r", "timeout": 5}), nil)
	})
	t.Run("subscription_address", func(t *testing.T) {
		sendN(t, s, "drain/t2", "s", 2, false)
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "drain/sub", "credit": 5, "drain": true})
		check(t, r.do("wait_drain", m{"link": "r", "timeout": 5}), []string{"s0", "s1"})
	})
	t.Run("topic_named_subscription", func(t *testing.T) {
		// topic::name is created by its first attach; it then collects.
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "drain/t2::named", "credit": 0})
		sendN(t, s, "drain/t2", "n", 2, false)
		check(t, r.do("drain", m{"link": "r", "credit": 5, "timeout": 5}), []string{"n0", "n1"})
	})
	t.Run("topic", func(t *testing.T) {
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "drain/t", "credit": 0})
		sendN(t, s, "drain/t", "t", 2, false)
		check(t, r.do("drain", m{"link": "r", "credit": 5, "timeout": 5}), []string{"t0", "t1"})
	})
}

// TestAMQPModifiedUndeliverableHere (issue 10 item 5): a message settled
// modified(undeliverable-here) never comes back to that link; another
// consumer gets it.
func TestAMQPModifiedUndeliverableHere(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "undeliverable/q")
	s := proton(t, p, "sender")
	sendN(t, s, "undeliverable/q", "u", 1, false)
	a := proton(t, p, "A")
	a.do("receiver", m{"link": "r", "address": "undeliverable/q", "credit": 5})
	if got := a.do("receive", m{"link": "r", "settle": "undeliverable"}); len(got.Messages) != 1 {
		t.Fatalf("A got %v", got.Messages)
	}
	if again := a.do("receive", m{"link": "r", "quiet": true, "timeout": 1.5}); len(again.Messages) != 0 {
		t.Fatalf("undeliverable-here message came back to the same link: %v", bodies(again.Messages))
	}
	b := proton(t, p, "B")
	b.do("receiver", m{"link": "r", "address": "undeliverable/q", "credit": 5})
	got := b.do("receive", m{"link": "r", "timeout": 5})
	if len(got.Messages) != 1 || got.Messages[0].text() != "u0" {
		t.Fatalf("another consumer did not get the undeliverable-here message: %v", bodies(got.Messages))
	}
	if again := a.do("receive", m{"link": "r", "quiet": true, "timeout": 0.5}); len(again.Messages) != 0 {
		t.Fatalf("undeliverable-here message came back to the same link: %v", bodies(again.Messages))
	}
}

// TestAMQPLargeMessage (issue 10 item 6): max-message-size of at least
// 64 MiB is advertised on attach, and a message just under 64 MiB
// round-trips queue → consumer with its bytes intact (checksum).
func TestAMQPLargeMessage(t *testing.T) {
	largeMessage(t, 64<<20-4096)
}

// TestAMQPLargeMessage64MiBBody (issue 10 item 6): a message whose body
// is 64 MiB (DESIGN.md section 10: messages up to 64 MiB by default) —
// slightly more than 64 MiB encoded — round-trips; MQTT allows 64 MiB +
// 64 KiB packets for the same reason.
func TestAMQPLargeMessage64MiBBody(t *testing.T) {
	largeMessage(t, 64<<20)
}

// TestAMQPDeadLetterProperties: a message rejected by an AMQP consumer
// reaches an AMQP consumer of the dead-letter address with the
// properties docs/router.md names (x-throng-dead-letter-reason,
// x-throng-original-address). Not an issue 10 item: found by this suite.
func TestAMQPDeadLetterProperties(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "dl/q", "DLQ")
	s := proton(t, p, "sender")
	sendN(t, s, "dl/q", "r", 1, false)
	r := proton(t, p, "receiver")
	r.do("receiver", m{"link": "r", "address": "dl/q", "credit": 5})
	if got := r.do("receive", m{"link": "r", "settle": "reject"}); len(got.Messages) != 1 {
		t.Fatalf("got %v", got.Messages)
	}
	d := proton(t, p, "dlq")
	d.do("receiver", m{"link": "d", "address": "DLQ", "credit": 5})
	got := d.do("receive", m{"link": "d", "timeout": 5})
	if len(got.Messages) != 1 {
		t.Fatalf("DLQ got %v", got.Messages)
	}
	props := got.Messages[0].Properties
	if props["x-throng-original-address"] != "dl/q" || props["x-throng-dead-letter-reason"] == nil {
		t.Fatalf("dead letter application properties %v; want x-throng-original-address dl/q and a reason", props)
	}
}

// TestAMQPNodeCrashAcceptedNotRedelivered (issue 10 item 7): after throng
// itself is killed (SIGKILL) and restarted on its data directory, the
// messages a consumer had accepted are not delivered again, also when
// they were stored in one group-commit entry with messages it still held
// unsettled; those come again. testkit cannot kill a platform, so this
// test builds cmd/throng and runs it as a process.
func TestAMQPNodeCrashAcceptedNotRedelivered(t *testing.T) {
	requireProton(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "throng")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/throngmq/throng/cmd/throng").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	amqpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var node *exec.Cmd
	start := func() {
		node = exec.Command(bin, "serve", "--data-dir", data, "--amqp", amqpAddr, "--admin", adminAddr,
			"--admin-password", "conformance", "--amqps=", "--mqtt=", "--mqtts=", "--http=", "--https=")
		node.Stdout, node.Stderr = os.Stderr, os.Stderr
		if os.Getenv("THRONG_TEST_LOG") == "" {
			node.Stdout, node.Stderr = nil, nil
		}
		if err := node.Start(); err != nil {
			t.Fatal(err)
		}
		waitListening(t, amqpAddr, 60*time.Second)
	}
	crash := func() {
		_ = node.Process.Signal(syscall.SIGKILL)
		_ = node.Wait()
	}
	start()
	t.Cleanup(crash)
	req, _ := http.NewRequest("POST", "http://"+adminAddr+"/api/tenants/default/addresses",
		strings.NewReader(`{"name": "crash/node", "type": "queue"}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("admin", "conformance")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("define queue: %v %v", err, resp)
	}
	resp.Body.Close()

	url := "amqp://" + amqpAddr
	s := startAgent(t, "sender", "amqp_agent.py", url)
	s.do("connect", nil)
	sendN(t, s, "crash/node", "c", 10, true)
	a := startAgent(t, "A", "amqp_agent.py", url)
	a.do("connect", nil)
	a.do("receiver", m{"link": "r", "address": "crash/node", "credit": 10})
	got := a.do("receive", m{"link": "r", "count": 10, "settle": "none"})
	if bs := bodies(got.Messages); strings.Join(bs, ",") != strings.Join(names("c", 0, 10), ",") {
		t.Fatalf("A got %v", bs)
	}
	a.do("settle", m{"link": "r", "n": 5, "outcome": "accept"})
	// No signal tells when the accepts are stored: give them a second.
	time.Sleep(time.Second)
	crash()
	a.kill()
	s.kill()
	start()

	b := startAgent(t, "B", "amqp_agent.py", url)
	b.do("connect", nil)
	b.do("receiver", m{"link": "r", "address": "crash/node", "credit": 20})
	first := b.do("receive", m{"link": "r", "count": 5, "timeout": 30})
	more := b.do("receive", m{"link": "r", "quiet": true, "timeout": 2})
	if bs := append(bodies(first.Messages), bodies(more.Messages)...); !sameSet(bs, names("c", 5, 10)) {
		t.Fatalf("after a crash with c0..c4 accepted and c5..c9 unsettled, B got %v; want exactly c5..c9", bs)
	}
}
