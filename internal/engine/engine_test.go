package engine

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestContract checks the engine behaviour throng relies on: accounts added
// at run time, JetStream per account, isolation between accounts, and data
// kept across a restart.
func TestContract(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e, err := Start(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, acc := range []string{AccountFor("a"), AccountFor("b")} {
		if err := e.EnsureAccount(acc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Connect(AccountFor("nope")); err == nil {
		t.Fatal("connect to an unknown account succeeded")
	}
	ncA, err := e.Connect(AccountFor("a"))
	if err != nil {
		t.Fatal(err)
	}
	ncB, err := e.Connect(AccountFor("b"))
	if err != nil {
		t.Fatal(err)
	}
	// Core isolation: B subscribes to everything, A publishes.
	subB, err := ncB.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := ncA.Publish("x.y", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	ncA.Flush()
	if m, err := subB.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("tenant b received tenant a's message %q", m.Data)
	}

	// Same stream name in both accounts stays apart.
	jsA, _ := jetstream.New(ncA)
	jsB, _ := jetstream.New(ncB)
	for _, js := range []jetstream.JetStream{jsA, jsB} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := jsA.Publish(ctx, "s.1", []byte("from a")); err != nil {
		t.Fatal(err)
	}
	infoB, _ := jsB.Stream(ctx, "S")
	if n := infoB.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("tenant b's stream holds %d messages", n)
	}
	cons, err := jsA.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil || string(m.Data()) != "from a" {
		t.Fatalf("consume: %v %v", m, err)
	}
	m.Ack()
	if _, err := jsA.Publish(ctx, "s.2", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	ncA.Close()
	ncB.Close()
	e.Shutdown()
	if _, err := e.Connect(AccountFor("a")); err == nil {
		t.Fatal("connect after shutdown succeeded")
	}

	// Restart: the stream, its messages and the durable consumer are back
	// once the account is ensured again.
	e, err = Start(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if err := e.EnsureAccount(AccountFor("a")); err != nil {
		t.Fatal(err)
	}
	ncA, err = e.Connect(AccountFor("a"), nats.Name("after-restart"))
	if err != nil {
		t.Fatal(err)
	}
	defer ncA.Close()
	jsA, _ = jetstream.New(ncA)
	cons, err = jsA.Consumer(ctx, "S", "c")
	if err != nil {
		t.Fatal(err)
	}
	m, err = cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil || string(m.Data()) != "kept" {
		t.Fatalf("after restart: %v %v", m, err)
	}
}
