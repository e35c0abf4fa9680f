package testkit_test

import (
	"context"
	"net"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// The cross-protocol mapping of DESIGN.md section 4.4, row by row, through
// a whole platform: MQTT 5 (paho.golang) on one side, AMQP 1.0 (go-amqp) on
// the other. docs/mapping.md is the table these tests check.

type mqttClient struct {
	*paho.Client
	msgs chan *paho.Publish
}

func dialMQTT(t *testing.T, p *testkit.Platform, id string) *mqttClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", p.MQTTAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &mqttClient{msgs: make(chan *paho.Publish, 100)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("mqtt connect: %v %+v", err, ack)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *mqttClient) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no MQTT message within 10s")
		return nil
	}
}

func dialAMQP(t *testing.T, p *testkit.Platform) *goamqp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := goamqp.Dial(ctx, "amqp://"+p.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMQTTToAMQP(t *testing.T) {
	p := testkit.Start(t)
	if p.MQTTAddr == "" || p.AMQPAddr == "" {
		t.Fatal("platform serves neither MQTT nor AMQP")
	}
	s := dialAMQP(t, p)
	rcv, err := s.NewReceiver(ctx10(t), "x/mqtt-to-amqp", &goamqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	mc := dialMQTT(t, p, "pub1")
	expiry := uint32(60)
	_, err = mc.Publish(ctx10(t), &paho.Publish{
		Topic: "x/mqtt-to-amqp", QoS: 1, Payload: []byte("payload-1"),
		Properties: &paho.PublishProperties{
			ContentType:     "application/json",
			ResponseTopic:   "replies/1",
			CorrelationData: []byte{1, 2, 3},
			MessageExpiry:   &expiry,
			User:            paho.UserProperties{{Key: "k", Value: "v"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctx10(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	// payload ↔ a single data section
	if len(m.Data) != 1 || string(m.Data[0]) != "payload-1" {
		t.Errorf("body: data %q value %v", m.Data, m.Value)
	}
	if m.Properties == nil {
		t.Fatal("no properties section")
	}
	if m.Properties.ContentType == nil || *m.Properties.ContentType != "application/json" {
		t.Errorf("content-type %v", m.Properties.ContentType)
	}
	if m.Properties.ReplyTo == nil || *m.Properties.ReplyTo != "replies/1" {
		t.Errorf("reply-to %v", m.Properties.ReplyTo)
	}
	if cid, ok := m.Properties.CorrelationID.([]byte); !ok || string(cid) != "\x01\x02\x03" {
		t.Errorf("correlation-id %#v (want binary 010203)", m.Properties.CorrelationID)
	}
	if m.ApplicationProperties["k"] != "v" {
		t.Errorf("application properties %v", m.ApplicationProperties)
	}
	// message expiry ↔ ttl / absolute-expiry-time
	ttlOK := m.Header != nil && m.Header.TTL > 0 && m.Header.TTL <= 60*time.Second
	absOK := m.Properties.AbsoluteExpiryTime != nil && time.Until(*m.Properties.AbsoluteExpiryTime) > 0
	if !ttlOK && !absOK {
		t.Errorf("expiry lost: header %+v absolute %v", m.Header, m.Properties.AbsoluteExpiryTime)
	}
	if err := rcv.AcceptMessage(ctx10(t), m); err != nil {
		t.Fatal(err)
	}
	// QoS 0 is delivered too (pre-settled on the wire; go-amqp does not
	// expose the settled flag, the amqp package's frame tests check it).
	if _, err := mc.Publish(ctx10(t), &paho.Publish{Topic: "x/mqtt-to-amqp", QoS: 0, Payload: []byte("q0")}); err != nil {
		t.Fatal(err)
	}
	m, err = rcv.Receive(ctx10(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.GetData()) != "q0" {
		t.Errorf("QoS 0 delivery body %q", m.GetData())
	}
}

func TestAMQPToMQTT(t *testing.T) {
	p := testkit.Start(t)
	mc := dialMQTT(t, p, "sub1")
	if _, err := mc.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "y/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	s := dialAMQP(t, p)
	snd, err := s.NewSender(ctx10(t), "y/amqp-to-mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, reply := "text/plain", "replies/2"
	m := goamqp.NewMessage([]byte("data-body"))
	m.Properties = &goamqp.MessageProperties{ContentType: &ct, ReplyTo: &reply, CorrelationID: []byte("corr")}
	m.ApplicationProperties = map[string]any{"a": "b", "n": int64(7)}
	m.Header = &goamqp.MessageHeader{TTL: 30 * time.Second, Durable: true}
	if err := snd.Send(ctx10(t), m, nil); err != nil {
		t.Fatal(err)
	}
	got := mc.next(t)
	if got.Topic != "y/amqp-to-mqtt" || string(got.Payload) != "data-body" {
		t.Fatalf("topic %q payload %q", got.Topic, got.Payload)
	}
	pp := got.Properties
	if pp == nil || pp.ContentType != "text/plain" || pp.ResponseTopic != "replies/2" || string(pp.CorrelationData) != "corr" {
		t.Errorf("properties %+v", pp)
	}
	props := map[string]string{}
	for _, u := range pp.User {
		props[u.Key] = u.Value
	}
	if props["a"] != "b" || props["n"] != "7" {
		t.Errorf("user properties %v (application properties as strings)", props)
	}
	if pp.MessageExpiry == nil || *pp.MessageExpiry == 0 || *pp.MessageExpiry > 30 {
		t.Errorf("message expiry %v", pp.MessageExpiry)
	}
	if got.QoS != 1 {
		t.Errorf("durable unsettled AMQP message arrived at QoS %d", got.QoS)
	}

	// amqp-value string → its bytes
	if err := snd.Send(ctx10(t), &goamqp.Message{Value: "a string"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := mc.next(t); string(got.Payload) != "a string" {
		t.Errorf("amqp-value string payload %q", got.Payload)
	}
	// other bodies → their AMQP encoding, with the throng content type
	if err := snd.Send(ctx10(t), &goamqp.Message{Value: int64(42)}, nil); err != nil {
		t.Fatal(err)
	}
	got = mc.next(t)
	if got.Properties == nil || got.Properties.ContentType != "application/vnd.throng.amqp-body" {
		t.Errorf("non-binary body content type %+v", got.Properties)
	}
	// the AMQP encoding of the value: long 42 (0x81 ...) or smalllong 42
	want := []byte{0x81, 0, 0, 0, 0, 0, 0, 0, 0x2a}
	want2 := []byte{0x55, 0x2a}
	if string(got.Payload) != string(want) && string(got.Payload) != string(want2) {
		t.Errorf("amqp-value 42 delivered as %x", got.Payload)
	}
}
