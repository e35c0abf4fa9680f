package testkit_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// Queue actions and history (issue 15; docs/admin-api.md, "Queue
// actions" and "History"): a device publishes with a real MQTT 5 client
// into a dead-letter queue, the administrator peeks (twice: nothing is
// consumed), moves the messages back to the work queue, an AMQP consumer
// takes one, the rest is purged; the address's history shows the
// traffic.

type peekView struct {
	Messages []struct {
		Sequence   uint64            `json:"sequence"`
		Properties map[string]string `json:"properties"`
		Size       int               `json:"size"`
		Body       string            `json:"body"`
		Encoding   string            `json:"encoding"`
	} `json:"messages"`
}

func (e *liveEnv) peek(path string) peekView {
	e.t.Helper()
	var v peekView
	if err := json.Unmarshal(e.api("GET", path, nil, 200), &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *liveEnv) backlog(ten, name string) int64 {
	e.t.Helper()
	var a struct {
		Stats struct {
			Backlog int64 `json:"backlog"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(e.api("GET", "/api/tenants/"+ten+"/addresses/"+name, nil, 200), &a); err != nil {
		e.t.Fatal(err)
	}
	return a.Stats.Backlog
}

func TestQueueActionsAndHistory(t *testing.T) {
	e := startLive(t)
	e.user("default", "app1", "pw-app1", "jobs", "jobs/dlq", "events", "news")
	e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "jobs", "type": "queue"}, 201)
	e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "jobs/dlq", "type": "queue"}, 201)
	e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "events", "type": "multicast"}, 201)

	c5, rc := e.mqtt5("app1", "pw-app1", "pub")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	binary := []byte{0xff, 0xfe, 0x00, 0x01}
	for i := range 5 {
		body := []byte(fmt.Sprintf("job %d", i))
		if i == 4 {
			body = binary
		}
		pub := &paho.Publish{Topic: "jobs/dlq", QoS: 1, Payload: body,
			Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "attempt", Value: fmt.Sprint(i)}}}}
		if _, err := c5.Publish(ctx, pub); err != nil {
			t.Fatal(err)
		}
	}

	// Peek: the first N, twice the same, nothing consumed.
	p := e.peek("/api/tenants/default/messages/jobs/dlq?limit=3")
	if len(p.Messages) != 3 || p.Messages[0].Body != "job 0" || p.Messages[0].Encoding != "utf-8" ||
		p.Messages[0].Properties["content-type"] != "text/plain" || p.Messages[0].Properties["attempt"] != "0" || p.Messages[0].Size != 5 {
		t.Fatalf("peek: %+v", p)
	}
	if again := e.peek("/api/tenants/default/messages/jobs%2Fdlq?limit=3"); fmt.Sprint(again) != fmt.Sprint(p) {
		t.Fatalf("second peek differs: %+v", again)
	}
	all := e.peek("/api/tenants/default/messages/jobs/dlq?limit=100")
	if len(all.Messages) != 5 || all.Messages[4].Encoding != "base64" || all.Messages[4].Body != base64.StdEncoding.EncodeToString(binary) {
		t.Fatalf("peek all: %+v", all)
	}
	if b := e.backlog("default", "jobs/dlq"); b != 5 {
		t.Fatalf("backlog after peeks %d, want 5", b)
	}

	// The address's history shows the five in and the backlog (the
	// sampler runs every 5 s).
	testkit.Eventually(t, 15*time.Second, func() bool {
		var h struct {
			In      []float64 `json:"messagesInPerSecond"`
			Backlog []int64   `json:"backlog"`
		}
		if err := json.Unmarshal(e.api("GET", "/api/tenants/default/history/jobs/dlq", nil, 200), &h); err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for _, v := range h.In {
			sum += v * 5
		}
		return len(h.Backlog) > 0 && h.Backlog[len(h.Backlog)-1] == 5 && sum == 5
	})
	for _, path := range []string{"/api/history", "/api/tenants/default/history"} {
		var h struct {
			Step int     `json:"step"`
			Time []int64 `json:"time"`
		}
		if err := json.Unmarshal(e.api("GET", path, nil, 200), &h); err != nil || h.Step != 5 || len(h.Time) == 0 {
			t.Fatalf("%s: %+v %v", path, h, err)
		}
	}

	// Move back: all five at the work queue, none left in the DLQ.
	var mv struct {
		Moved int64 `json:"moved"`
	}
	if err := json.Unmarshal(e.api("POST", "/api/tenants/default/move/jobs/dlq?to=jobs", nil, 200), &mv); err != nil || mv.Moved != 5 {
		t.Fatalf("move: %+v %v", mv, err)
	}
	if b := e.backlog("default", "jobs/dlq"); b != 0 {
		t.Fatalf("dlq backlog after the move %d", b)
	}
	if b := e.backlog("default", "jobs"); b != 5 {
		t.Fatalf("jobs backlog after the move %d", b)
	}
	moved := e.peek("/api/tenants/default/messages/jobs")
	if len(moved.Messages) != 5 || moved.Messages[1].Body != "job 1" || moved.Messages[1].Properties["attempt"] != "1" {
		t.Fatalf("jobs after the move: %+v", moved)
	}

	// A consumer gets a moved message as a first delivery.
	_, r := e.amqp("app1", "pw-app1", "jobs")
	m, err := r.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.GetData()) != "job 0" || m.Header != nil && m.Header.DeliveryCount != 0 {
		t.Fatalf("received %q, header %+v", m.GetData(), m.Header)
	}
	if err := r.AcceptMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return e.backlog("default", "jobs") == 4 })
	_ = r.Close(ctx)

	// Purge: the count, then nothing.
	var pg struct {
		Purged int64 `json:"purged"`
	}
	if err := json.Unmarshal(e.api("POST", "/api/tenants/default/purge/jobs", nil, 200), &pg); err != nil || pg.Purged != 4 {
		t.Fatalf("purge: %+v %v", pg, err)
	}
	if b := e.backlog("default", "jobs"); b != 0 {
		t.Fatalf("backlog after purge %d", b)
	}
	if p := e.peek("/api/tenants/default/messages/jobs"); len(p.Messages) != 0 {
		t.Fatalf("peek after purge: %+v", p)
	}

	// A subscription: its pending messages peeked and purged; the
	// topic's stream and its other subscription keep theirs.
	e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "news", "type": "topic"}, 201)
	e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "news-a", "type": "subscription", "topic": "news"}, 201)
	e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "news-b", "type": "subscription", "topic": "news"}, 201)
	for i := range 3 {
		if _, err := c5.Publish(ctx, &paho.Publish{Topic: "news", QoS: 1, Payload: []byte(fmt.Sprintf("news %d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if p := e.peek("/api/tenants/default/messages/news-a"); len(p.Messages) != 3 || p.Messages[2].Body != "news 2" {
		t.Fatalf("subscription peek: %+v", p)
	}
	if err := json.Unmarshal(e.api("POST", "/api/tenants/default/purge/news-a", nil, 200), &pg); err != nil || pg.Purged != 3 {
		t.Fatalf("subscription purge: %+v %v", pg, err)
	}
	if p := e.peek("/api/tenants/default/messages/news-a"); len(p.Messages) != 0 {
		t.Fatalf("subscription after purge: %+v", p)
	}
	if b := e.backlog("default", "news-a"); b != 0 {
		t.Fatalf("subscription backlog after purge %d", b)
	}
	if p := e.peek("/api/tenants/default/messages/news-b"); len(p.Messages) != 3 {
		t.Fatalf("the other subscription lost messages: %+v", p)
	}

	// Errors.
	e.api("POST", "/api/tenants/default/purge/events", nil, 409)                // multicast stores nothing
	e.api("POST", "/api/tenants/default/purge/nope", nil, 404)                  // no such address
	e.api("POST", "/api/tenants/default/move/jobs/dlq", nil, 400)               // no target
	e.api("POST", "/api/tenants/default/move/jobs/dlq?to=nope", nil, 404)       // no such target
	e.api("POST", "/api/tenants/default/move/jobs/dlq?to=jobs%2Fdlq", nil, 400) // onto itself
	e.api("GET", "/api/tenants/default/messages/jobs?limit=101", nil, 400)
	e.api("POST", "/api/tenants", map[string]any{"name": "acme"}, 201)
	e.api("POST", "/api/tenants/default/users", map[string]any{"name": "watch", "password": "pw-watch", "roles": []string{"operator"}}, 201)
	op := &apiUser{base: e.AdminURL, user: "watch", pass: "pw-watch"}
	if st, _ := op.do("GET", "/api/tenants/default/messages/jobs"); st != 200 {
		t.Fatalf("operator peek: %d", st)
	}
	if st, _ := op.do("POST", "/api/tenants/default/purge/jobs"); st != 403 {
		t.Fatalf("operator purge: %d, want 403", st)
	}
}
