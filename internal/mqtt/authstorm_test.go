package mqtt

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// TestAuthStormDoesNotStallConnected (issue 12): a storm of connects
// whose passwords need bcrypt queues for the authenticator's bcrypt
// workers (one here) in the connections' own handshake goroutines; a
// client already connected keeps its round trips fast meanwhile, and
// every storm connection gets its answer.
func TestAuthStormDoesNotStallConnected(t *testing.T) {
	e := startEnv(t, t.TempDir(), func(c *Config) {
		c.Auth = auth.New(c.Store.(auth.Users), auth.WithBcryptWorkers(1))
		c.ConnectTimeout = 2 * time.Minute // the storm queues longer than the default 10 s under -race
	})
	// A bcrypt cost of 8 keeps the test short under -race; the pool
	// does not care about the cost.
	h, err := bcrypt.GenerateFromPassword([]byte("right"), 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutUser(ctxT(t), &tenant.User{Name: "app", Tenant: "default", PasswordHash: string(h), Roles: []tenant.Role{tenant.RoleApp}}, true); err != nil {
		t.Fatal(err)
	}
	c := mustV5(t, e, "steady", true, 0)
	if _, err := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "steady/t", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	const storm = 8
	var wg sync.WaitGroup
	codes := make(chan byte, storm)
	start := time.Now()
	for i := range storm {
		wg.Go(func() {
			// Wrong passwords: never answered from the cache.
			rc, err := rawConnect311(e.addr, fmt.Sprintf("storm-%d", i), "app", "wrong")
			if err != nil {
				t.Errorf("storm connect %d: %v", i, err)
				return
			}
			codes <- rc
		})
	}
	stormDone := make(chan struct{})
	go func() { wg.Wait(); close(stormDone) }()
	// Round trips of the connected client until the storm is over.
	var worst time.Duration
	trips := 0
	for {
		select {
		case <-stormDone:
		default:
			t0 := time.Now()
			if _, err := c.Publish(ctxT(t), &paho.Publish{Topic: "steady/t", QoS: 1, Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.msgs:
			case <-time.After(10 * time.Second):
				t.Fatal("no delivery")
			}
			worst = max(worst, time.Since(t0))
			trips++
			time.Sleep(20 * time.Millisecond)
			continue
		}
		break
	}
	close(codes)
	n := 0
	for rc := range codes {
		if rc != 4 { // 3.1.1: bad user name or password
			t.Fatalf("storm connect: CONNACK %#x", rc)
		}
		n++
	}
	if n != storm {
		t.Fatalf("%d of %d storm connects answered", n, storm)
	}
	t.Logf("storm of %d bcrypt connects took %v; connected client: %d round trips, the worst %v", storm, time.Since(start), trips, worst)
	if worst > time.Second {
		t.Fatalf("a connected client's round trip took %v during the storm", worst)
	}
}

// rawConnect311 sends an MQTT 3.1.1 CONNECT with a user name and
// password and returns the CONNACK return code (no client library: their
// CONNACK timeouts are shorter than the storm).
func rawConnect311(addr, id, user, pass string) (byte, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(2 * time.Minute))
	str := func(b []byte, s string) []byte { return append(append(b, byte(len(s)>>8), byte(len(s))), s...) }
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 30} // user name, password, clean session; keep-alive 30 s
	body = str(str(str(body, id), user), pass)
	pk := append([]byte{0x10, byte(len(body))}, body...) // len < 128
	if _, err := nc.Write(pk); err != nil {
		return 0, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(nc, ack[:]); err != nil {
		return 0, err
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		return 0, fmt.Errorf("not a CONNACK: % x", ack)
	}
	return ack[3], nil
}
