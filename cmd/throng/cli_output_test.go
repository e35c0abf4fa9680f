package main

import (
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/testkit"
)

// TestFlagMistakeOnce (issue 14 item 12): a flag mistake is reported
// once, with a pointer to the command's -h, not the mistake, the whole
// usage text and the mistake again; -h still prints the usage.
func TestFlagMistakeOnce(t *testing.T) {
	r := mustCLI(t, nil, exitUsage, "tenant", "list", "--no-such-flag")
	if c := strings.Count(r.stderr, "flag provided but not defined: -no-such-flag"); c != 1 {
		t.Fatalf("the mistake %d times:\n%s", c, r.stderr)
	}
	if !strings.Contains(r.stderr, "Run 'throng tenant list -h' for its flags.") || strings.Contains(r.stderr, "Usage:") {
		t.Fatalf("stderr:\n%s", r.stderr)
	}
	r = mustCLI(t, nil, exitUsage, "serve", "--sync-always=maybe")
	if c := strings.Count(r.stderr, "sync-always"); c != 1 {
		t.Fatalf("the mistake %d times:\n%s", c, r.stderr)
	}
	r = mustCLI(t, nil, exitOK, "tenant", "list", "-h")
	if !strings.Contains(r.stderr, "Usage: throng tenant list") || !strings.Contains(r.stderr, "-server") {
		t.Fatalf("-h:\n%s", r.stderr)
	}
}

// TestAddressGetText (issue 14 item 12): the text form of address get
// shows the limits (with the defaults that apply), the dead-letter
// address and a subscription's topic.
func TestAddressGetText(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "address", "create", "DLQ2", "--type", "queue")
	mustCLI(t, env, 0, "address", "create", "jobs", "--type", "queue", "--max-messages", "100", "--max-age", "24h", "--dead-letter", "DLQ2")
	mustCLI(t, env, 0, "address", "create", "news", "--type", "topic", "--max-bytes", "1MiB", "--overflow", "drop-oldest")
	mustCLI(t, env, 0, "address", "create", "news-eu", "--type", "subscription", "--topic", "news")
	get := func(name string) map[string]string {
		out := map[string]string{}
		for _, row := range columns(t, mustCLI(t, env, 0, "address", "get", name).stdout) {
			out[row[0]] = row[1]
		}
		return out
	}
	if g := get("jobs"); g["limits"] != "maxMessages=100 maxAge=24h0m0s maxDeliveries=10 (default)" || g["deadLetter"] != "DLQ2" {
		t.Fatalf("queue: %v", g)
	}
	if g := get("news"); g["limits"] != "maxBytes=1MiB overflow=drop-oldest" || g["deadLetter"] != "DLQ (default)" {
		t.Fatalf("topic: %v", g)
	}
	if g := get("news-eu"); g["topic"] != "news" {
		t.Fatalf("subscription: %v", g)
	}
	// References are checked: no such dead-letter address, no such topic,
	// a topic on a queue.
	mustCLI(t, env, 1, "address", "create", "x1", "--type", "queue", "--dead-letter", "nowhere")
	mustCLI(t, env, 1, "address", "create", "x2", "--type", "subscription", "--topic", "nope")
	mustCLI(t, env, 1, "address", "create", "x3", "--type", "queue", "--topic", "news")
}
