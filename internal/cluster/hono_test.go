package cluster_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// TestHonoCommandsAcrossNodes (issue 13): Hono's command & control when
// the device and the application are on different nodes. A business
// application on node 1 (go-amqp, the platform administrator) sends
// request/response commands to an MQTT device on node 2 (paho.golang)
// and to an AMQP device on node 3 (go-amqp), each on its own
// connection; each device answers on its node and the response reaches
// the application's command_response receiver on node 1 with the
// command's correlation id. A command for a device connected nowhere is
// released at once, on any node. The tenant and devices are registered
// through /v1 on node 1 only (the replicated registry).
func TestHonoCommandsAcrossNodes(t *testing.T) {
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
		c.waitReady(nd)
	}
	for _, nd := range c.nodes {
		c.checkStatus(nd, 3)
	}

	c.api(n1, "POST", "/v1/tenants/iot", `{}`, nil)
	for _, d := range []struct{ id, authID, pw string }{{"dev1", "sensor1", "secret1"}, {"dev2", "sensor2", "secret2"}} {
		c.api(n1, "POST", "/v1/devices/iot/"+d.id, `{}`, nil)
		c.api(n1, "PUT", "/v1/credentials/iot/"+d.id,
			`[{"type":"hashed-password","auth-id":"`+d.authID+`","secrets":[{"pwd-plain":"`+d.pw+`"}]}]`, nil)
	}
	c.api(n1, "POST", "/v1/devices/iot/offline", `{}`, nil)

	// The MQTT device on node 2, once node 2 knows its credentials.
	cmds := make(chan *paho.Publish, 16)
	var dev1 *paho.Client
	deadline := time.Now().Add(60 * time.Second)
	for dev1 == nil {
		conn, err := net.DialTimeout("tcp", n2.mqtt, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{ClientID: "dev1-n2", Conn: conn,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				cmds <- pr.Packet
				return true, nil
			}}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := cl.Connect(ctx, &paho.Connect{ClientID: "dev1-n2", CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: "sensor1@iot", PasswordFlag: true, Password: []byte("secret1")})
		cancel()
		if err == nil && ack.ReasonCode == 0 {
			dev1 = cl
			t.Cleanup(func() { _ = cl.Disconnect(&paho.Disconnect{}) })
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("device on node 2: %v %+v", err, ack)
		}
		time.Sleep(200 * time.Millisecond)
	}
	sa, err := dev1.Subscribe(ctxT(t, 30*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "command///req/#", QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Fatalf("SUBSCRIBE on node 2: %v %+v", err, sa)
	}

	// The AMQP device on node 3.
	var dev2 *goamqp.Session
	deadline = time.Now().Add(60 * time.Second)
	for dev2 == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := goamqp.Dial(ctx, "amqp://"+n3.amqp, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("sensor2@iot", "secret2")})
		cancel()
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			if dev2, err = conn.NewSession(ctxT(t, 30*time.Second), nil); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device on node 3: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	dev2Cmds, err := dev2.NewReceiver(ctxT(t, 30*time.Second), "command", &goamqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatalf("command link on node 3: %v", err)
	}
	dev2Out, err := dev2.NewSender(ctxT(t, 30*time.Second), "", nil)
	if err != nil {
		t.Fatal(err)
	}

	// The application on node 1: the platform administrator, as Hono
	// applications commonly are.
	actx := ctxT(t, 30*time.Second)
	aconn, err := goamqp.Dial(actx, "amqp://"+n1.amqp, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("admin", adminPW)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aconn.Close() })
	app, err := aconn.NewSession(actx, nil)
	if err != nil {
		t.Fatal(err)
	}
	responses, err := app.NewReceiver(actx, "command_response/iot/app-1", &goamqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := app.NewSender(actx, "command/iot", nil)
	if err != nil {
		t.Fatal(err)
	}
	command := func(dev, corr string) (string, time.Duration) {
		to, name, reply := "command/iot/"+dev, "setBrightness", "command_response/iot/app-1"
		m := goamqp.NewMessage([]byte(`{"brightness":` + fmt.Sprint(len(corr)) + `}`))
		m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name, ReplyTo: &reply, CorrelationID: corr}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		rc, err := sender.SendWithReceipt(ctx, m, nil)
		if err != nil {
			return "error: " + err.Error(), time.Since(start)
		}
		st, err := rc.Wait(ctx)
		if err != nil {
			return "error: " + err.Error(), time.Since(start)
		}
		return outcome(st), time.Since(start)
	}
	response := func(corr string, dev string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m, err := responses.Receive(ctx, nil)
		if err != nil {
			t.Fatalf("no response for %s: %v", corr, err)
		}
		_ = responses.AcceptMessage(ctx, m)
		if m.Properties == nil || m.Properties.CorrelationID != corr || m.ApplicationProperties["status"] != int32(200) ||
			m.ApplicationProperties["device_id"] != dev || m.ApplicationProperties["tenant_id"] != "iot" {
			t.Fatalf("response %+v %v %q", m.Properties, m.ApplicationProperties, m.GetData())
		}
	}

	// node 1 → MQTT device on node 2. Until the device's consumer is
	// known on node 1 (the interest crosses the routes shortly after
	// the SUBACK) the command is released: the application sends it
	// again, as a Hono application does.
	start := time.Now()
	for i := 0; ; i++ {
		corr := fmt.Sprintf("mqtt-%d", i)
		done := make(chan string, 1)
		go func() { o, _ := command("dev1", corr); done <- o }()
		select {
		case p := <-cmds:
			if !strings.HasPrefix(p.Topic, "command///req/") || !strings.HasSuffix(p.Topic, "/setBrightness") {
				t.Fatalf("command on %q", p.Topic)
			}
			reqID := strings.TrimSuffix(strings.TrimPrefix(p.Topic, "command///req/"), "/setBrightness")
			if o := <-done; o != "accepted" {
				t.Fatalf("command outcome %s", o)
			}
			// The response's PUBACK follows the application's acceptance.
			puback := make(chan error, 1)
			go func() {
				_, err := dev1.Publish(ctxT(t, 30*time.Second), &paho.Publish{Topic: "command///res/" + reqID + "/200", QoS: 1,
					Payload: []byte(`{"ok":true}`)})
				puback <- err
			}()
			response(corr, "dev1")
			if err := <-puback; err != nil {
				t.Fatalf("response from node 2: %v", err)
			}
			t.Logf("node 1 → MQTT device on node 2 and back after %d released attempts, %s", i, time.Since(start).Round(time.Millisecond))
		case o := <-done:
			if o != "released" || time.Since(start) > 30*time.Second {
				t.Fatalf("command %d to the device on node 2: %s", i, o)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		break
	}

	// node 1 → AMQP device on node 3.
	start = time.Now()
	for i := 0; ; i++ {
		corr := fmt.Sprintf("amqp-%d", i)
		done := make(chan string, 1)
		go func() { o, _ := command("dev2", corr); done <- o }()
		got := make(chan *goamqp.Message, 1)
		rctx, cancel := context.WithCancel(context.Background())
		go func() {
			if m, err := dev2Cmds.Receive(rctx, nil); err == nil {
				got <- m
			}
		}()
		select {
		case m := <-got:
			cancel()
			if m.Properties == nil || m.Properties.Subject == nil || *m.Properties.Subject != "setBrightness" ||
				m.Properties.CorrelationID != corr || m.Properties.ReplyTo == nil ||
				!strings.HasPrefix(*m.Properties.ReplyTo, "command_response/iot/dev2/") {
				t.Fatalf("command on node 3: %+v", m.Properties)
			}
			if err := dev2Cmds.AcceptMessage(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			if o := <-done; o != "accepted" {
				t.Fatalf("command outcome %s", o)
			}
			r := goamqp.NewMessage([]byte(`{"ok":true}`))
			r.Properties = &goamqp.MessageProperties{To: m.Properties.ReplyTo, CorrelationID: corr}
			r.ApplicationProperties = map[string]any{"status": int32(200)}
			sent := make(chan error, 1)
			go func() { sent <- dev2Out.Send(ctxT(t, 30*time.Second), r, nil) }()
			response(corr, "dev2")
			if err := <-sent; err != nil {
				t.Fatalf("response from node 3: %v", err)
			}
			t.Logf("node 1 → AMQP device on node 3 and back after %d released attempts, %s", i, time.Since(start).Round(time.Millisecond))
		case o := <-done:
			cancel()
			// The receive above may still take the next command: wait
			// for it to end before trying again.
			select {
			case m := <-got:
				t.Fatalf("command delivered after its outcome %s: %+v", o, m.Properties)
			case <-time.After(100 * time.Millisecond):
			}
			if o != "released" || time.Since(start) > 30*time.Second {
				t.Fatalf("command %d to the device on node 3: %s", i, o)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		break
	}

	// A device connected nowhere: released at once (Hono: 503), not
	// after a timeout.
	o, took := command("offline", "off-1")
	if o != "released" || took > 5*time.Second {
		t.Fatalf("command for an offline device: %s after %s", o, took)
	}
	t.Logf("offline device: released after %s; whole test %s", took.Round(time.Millisecond), time.Since(began).Round(time.Second))
}

func outcome(st goamqp.DeliveryState) string {
	switch st := st.(type) {
	case *goamqp.StateAccepted:
		return "accepted"
	case *goamqp.StateReleased:
		return "released"
	case *goamqp.StateRejected:
		return fmt.Sprintf("rejected %v", st.Error)
	case *goamqp.StateModified:
		return "modified"
	}
	return fmt.Sprintf("%T", st)
}
