package router

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/message"
)

// topicSpaceCount is the number of messages the engine stored in the
// tenant's topic space.
func topicSpaceCount(t *testing.T, e *env, ten string) uint64 {
	t.Helper()
	nc, err := e.eng.Connect(engine.AccountFor(ten))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctxT(t), topicSpaceStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestTopicSpaceStoresOnlyForStoredInterest(t *testing.T) {
	e := newEnv(t)
	_, live := consume(t, e.r, "default", "plant/#", ConsumeOptions{}, 100)

	// No stored consumer: the durable message goes out live, unstored.
	publish(t, e.r, "default", "plant/a", "a")
	if d := live.next(t); string(d.Message.Body) != "a" || !d.Message.Durable || !d.PreSettled() {
		t.Fatalf("live got %q durable=%v", d.Message.Body, d.Message.Durable)
	}
	if n := topicSpaceCount(t, e, "default"); n != 0 {
		t.Fatalf("stored %d messages without a stored consumer", n)
	}

	// A durable subscription makes matching durable messages stored; the
	// live consumer still gets one copy.
	_, dur := consume(t, e.r, "default", "plant/+", ConsumeOptions{Durable: "d1"}, 100)
	_, comp := consume(t, e.r, "default", "plant/#", ConsumeOptions{StoredCompanion: true}, 100)
	publish(t, e.r, "default", "plant/b", "b")
	if d := dur.next(t); string(d.Message.Body) != "b" {
		t.Fatalf("durable got %q", d.Message.Body)
	}
	if d := live.next(t); string(d.Message.Body) != "b" {
		t.Fatalf("live got %q", d.Message.Body)
	}
	live.none(t, 50*time.Millisecond)
	if n := topicSpaceCount(t, e, "default"); n != 1 {
		t.Fatalf("stored %d messages, want 1", n)
	}
	// The stored companion does not see stored messages (its durable
	// does), but sees what went out live: a QoS 0 message, and a durable
	// one no stored filter matches (plant/x/y is outside plant/+).
	comp.none(t, 50*time.Millisecond)
	if _, err := e.r.Publish(ctxT(t), "default", "plant/c", &message.Message{Body: []byte("c")}); err != nil {
		t.Fatal(err)
	}
	publish(t, e.r, "default", "plant/x/y", "deep")
	for _, want := range []string{"c", "deep"} {
		if d := comp.next(t); string(d.Message.Body) != want {
			t.Fatalf("companion got %q want %q", d.Message.Body, want)
		}
	}
	if n := topicSpaceCount(t, e, "default"); n != 1 {
		t.Fatalf("stored %d messages, want 1", n)
	}
}

// TestStoredInterestAcrossNodes: a durable subscription created through
// one router (node) makes another node store matching messages once the
// change signal has reached it.
func TestStoredInterestAcrossNodes(t *testing.T) {
	e := newEnv(t)
	other, err := New(context.Background(), Config{Engine: e.eng, Store: e.store})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	publish(t, e.r, "default", "line/1", "before") // loads node A's (empty) set
	_, dur := consume(t, other, "default", "line/#", ConsumeOptions{Durable: "b"}, 1000)
	deadline := time.Now().Add(interestRefresh / 2) // the signal, not the periodic refresh
	i := 0
	for topicSpaceCount(t, e, "default") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("node A never stored for node B's durable subscription")
		}
		i++
		publish(t, e.r, "default", "line/1", fmt.Sprint(i))
		time.Sleep(time.Millisecond)
	}
	if d := dur.next(t); d.Message.Body == nil || d.Sequence == 0 {
		t.Fatalf("durable got %q seq %d", d.Message.Body, d.Sequence)
	}
}

func TestSubjectMatch(t *testing.T) {
	for _, c := range []struct {
		filter, subject string
		want            bool
	}{
		{"s.a.b", "s.a.b", true},
		{"s.a.*", "s.a.b", true},
		{"s.a.*", "s.a", false},
		{"s.a.*", "s.a.b.c", false},
		{"s.a.>", "s.a.b.c", true},
		{"s.a.>", "s.a", false},
		{"s.>", "s.x", true},
		{"s.a", "s.a.b", false},
		{"s.*.c", "s.b.c", true},
	} {
		if got := subjectMatch(splitSubject(c.filter), splitSubject(c.subject)); got != c.want {
			t.Errorf("subjectMatch(%q, %q) = %v", c.filter, c.subject, got)
		}
	}
}

// TestLiveAcrossNodes: live messages reach this node's consumers through
// the local index and other nodes' through the engine, each exactly once.
func TestLiveAcrossNodes(t *testing.T) {
	e := newEnv(t)
	other, err := New(context.Background(), Config{Engine: e.eng, Store: e.store})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, ca := consume(t, e.r, "default", "room/#", ConsumeOptions{}, 100)
	_, cb := consume(t, other, "default", "room/+", ConsumeOptions{}, 100)
	_, ma := consume(t, e.r, "default", "room/1", ConsumeOptions{}, 100) // exact name
	for _, p := range []struct {
		r    *Router
		name string
	}{{e.r, "room/1"}, {other, "room/1"}, {e.r, "room/2"}} {
		if _, err := p.r.Publish(ctxT(t), "default", p.name, &message.Message{Body: []byte(p.name)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range []struct {
		col  *collector
		want []string
	}{{ca, []string{"room/1", "room/1", "room/2"}}, {cb, []string{"room/1", "room/1", "room/2"}}, {ma, []string{"room/1", "room/1"}}} {
		got := map[string]int{}
		for range c.want {
			select {
			case d := <-c.col.ch:
				got[d.Address]++
			case <-time.After(10 * time.Second):
				t.Fatalf("consumer %d got only %v", i, got)
			}
		}
		want := map[string]int{}
		for _, w := range c.want {
			want[w]++
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("got %v want %v", got, want)
		}
		c.col.none(t, 50*time.Millisecond)
	}
}

// TestAnycastLocalFirst: an anycast publish goes to a consumer on the
// producer's node while it has credit, then to another node's through
// the engine; each producer gets its consumer's outcome.
func TestAnycastLocalFirst(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "work", Type: address.Anycast})
	other, err := New(context.Background(), Config{Engine: e.eng, Store: e.store, AnycastTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, local := consume(t, e.r, "default", "work", ConsumeOptions{}, 1)
	_, remote := consume(t, other, "default", "work", ConsumeOptions{}, 10)
	p, err := e.r.Producer(ctxT(t), "default", "work")
	if err != nil {
		t.Fatal(err)
	}
	outcomes := make(chan Outcome, 3)
	for i := range 3 {
		p.Publish(&message.Message{Body: []byte(fmt.Sprint(i))}, func(o Outcome, err error) {
			if err != nil {
				t.Error(err)
			}
			outcomes <- o
		})
	}
	d := local.next(t)
	if string(d.Message.Body) != "0" {
		t.Fatalf("local consumer got %q", d.Message.Body)
	}
	d.Settle(Outcome{Kind: Rejected, Condition: "x:y"})
	for range 2 {
		remote.next(t).Settle(Outcome{Kind: Accepted})
	}
	got := map[OutcomeKind]int{}
	for range 3 {
		select {
		case o := <-outcomes:
			got[o.Kind]++
		case <-time.After(10 * time.Second):
			t.Fatalf("outcomes so far %v", got)
		}
	}
	if got[Rejected] != 1 || got[Accepted] != 2 {
		t.Fatalf("outcomes %v", got)
	}
}

// TestMergeInterestPartialListing: a partial listing of the consumers (a
// node down in a cluster) never drops a known filter, and before the
// first complete listing it means "store everything"; a complete one
// replaces the set (stale filters go).
func TestMergeInterestPartialListing(t *testing.T) {
	sp := splitSubject
	old := [][]string{sp("t.a.>"), sp("t.b")}
	has := func(fs [][]string, f string) bool {
		for _, g := range fs {
			if strings.Join(g, ".") == f {
				return true
			}
		}
		return false
	}
	// Partial, after a complete one: t.a.> is missing from the listing
	// but stays; t.c is new.
	fs, all := mergeInterest([][]string{sp("t.b"), sp("t.c")}, false, false, true, old, false)
	if !has(fs, "t.a.>") || !has(fs, "t.b") || !has(fs, "t.c") || len(fs) != 3 || all {
		t.Fatalf("partial: %v all=%v", fs, all)
	}
	// Partial, first listing: everything is stored until a complete one.
	if _, all := mergeInterest([][]string{sp("t.b")}, false, false, false, nil, false); !all {
		t.Fatal("a partial first listing must store every durable message")
	}
	// Partial keeps "all" once set.
	if _, all := mergeInterest(nil, false, false, true, old, true); !all {
		t.Fatal("a partial listing dropped all")
	}
	// Complete: the listing as it is.
	fs, all = mergeInterest([][]string{sp("t.c")}, false, true, true, old, true)
	if len(fs) != 1 || !has(fs, "t.c") || all {
		t.Fatalf("complete: %v all=%v", fs, all)
	}
}

// TestListingComplete: a listing is complete when it has every consumer
// name, whatever the counts — a consumer made between the two requests
// must not hide one whose leader did not answer (the count comparison
// took [b c new] for complete against [a b c]).
func TestListingComplete(t *testing.T) {
	for _, tc := range []struct {
		names, infos []string
		want         bool
	}{
		{[]string{"a", "b", "c"}, []string{"c", "b", "a"}, true},
		{[]string{"a", "b", "c"}, []string{"b", "c", "new"}, false},
		{[]string{"a", "b"}, []string{"a", "b", "new"}, true},
		{[]string{"a", "b"}, []string{"a"}, false},
		{nil, nil, true},
	} {
		if got := listingComplete(tc.names, tc.infos); got != tc.want {
			t.Errorf("names %v, infos %v: complete %v, want %v", tc.names, tc.infos, got, tc.want)
		}
	}
}
