package router

import (
	"errors"
	"testing"

	"github.com/throngmq/throng/internal/address"
)

// TestStatsCountAcceptedOnly: messagesIn and bytesIn count only messages the
// address accepted; refused publishes (address full, too large, anycast
// without consumer) count in messagesRejected (issue 11.7: messagesIn
// counted them too).
func TestStatsCountAcceptedOnly(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "small", Type: address.Queue,
		Limits: address.Limits{MaxMessages: 2, MaxMessageSize: 100}})
	publish(t, e.r, "default", "small", "12345")
	publish(t, e.r, "default", "small", "1234567")
	if _, err := e.r.Publish(ctxT(t), "default", "small", msg("full")); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("third message: %v", err)
	}
	big := make([]byte, 200)
	if _, err := e.r.Publish(ctxT(t), "default", "small", msg(string(big))); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("oversized: %v", err)
	}
	st, err := e.r.AddressStats(ctxT(t), "default", "small")
	if err != nil {
		t.Fatal(err)
	}
	if st.MessagesIn != 2 || st.BytesIn != 12 || st.MessagesRejected != 2 || st.Backlog != 2 {
		t.Fatalf("queue stats = %+v; want in 2 (12 bytes), rejected 2, backlog 2", st)
	}

	// Live fan-out: accepted at once, with or without consumers.
	mustAddr(t, e.r, "default", &address.Address{Name: "news", Type: address.Multicast})
	publish(t, e.r, "default", "news", "abc")
	if st, _ := e.r.AddressStats(ctxT(t), "default", "news"); st.MessagesIn != 1 || st.BytesIn != 3 || st.MessagesRejected != 0 {
		t.Fatalf("multicast stats = %+v", st)
	}

	// Anycast without a consumer: refused, not in.
	mustAddr(t, e.r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	if _, err := e.r.Publish(ctxT(t), "default", "rpc", msg("x")); err == nil {
		t.Fatal("anycast without consumers accepted")
	}
	if st, _ := e.r.AddressStats(ctxT(t), "default", "rpc"); st.MessagesIn != 0 || st.BytesIn != 0 || st.MessagesRejected != 1 {
		t.Fatalf("anycast stats = %+v", st)
	}
}

// Delivered messages count in messagesOut and bytesOut (body bytes).
func TestStatsCountDelivered(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "out", Type: address.Queue})
	publish(t, e.r, "default", "out", "hello")
	publish(t, e.r, "default", "out", "abc")
	_, col := consume(t, e.r, "default", "out", ConsumeOptions{}, 10)
	for range 2 {
		col.next(t).Settle(Outcome{Kind: Accepted})
	}
	st, err := e.r.AddressStats(ctxT(t), "default", "out")
	if err != nil || st.MessagesOut != 2 || st.BytesOut != 8 {
		t.Fatalf("messagesOut %d bytesOut %d (%v), want 2 and 8", st.MessagesOut, st.BytesOut, err)
	}
}
