package admin

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// Queue actions (docs/admin-api.md, "Queue actions"): purge an address's
// stored messages, peek at the first ones, move them to another address
// (a dead-letter queue's back to where they failed). The router does
// them (router/admin.go); these handlers check the request.
//
// Address names contain '/', and the mux's rest-of-path wildcard must be
// the last part of a pattern, so the action comes before the name
// (/api/tenants/{t}/purge/{name}), not after it: /addresses/a/b/purge
// could be the address "a/b/purge".

// Queues is what the queue actions need (*router.Router).
type Queues interface {
	// Purge removes every stored message of the address and returns how
	// many it removed.
	Purge(ctx context.Context, tenantName, name string) (int64, error)
	// Peek returns the first limit stored messages without consuming
	// them or changing their delivery counts.
	Peek(ctx context.Context, tenantName, name string, limit int) ([]router.StoredMessage, error)
	// Move stores the messages of from at to, each before it is removed
	// from from (at least once), at most limit (0: all), and returns how
	// many it moved.
	Move(ctx context.Context, tenantName, from, to string, limit int) (int64, error)
}

func init() {
	routes = append(routes,
		route{"POST", "/api/tenants/{tenant}/purge/{name...}", accessTenant, (*Server).purgeAddress},
		route{"GET", "/api/tenants/{tenant}/messages/{name...}", accessTenant, (*Server).peekAddress},
		route{"POST", "/api/tenants/{tenant}/move/{name...}", accessTenant, (*Server).moveMessages},
	)
}

// PurgeResult is the answer of a purge.
type PurgeResult struct {
	Purged int64 `json:"purged"`
}

// MoveResult is the answer of a move.
type MoveResult struct {
	Moved int64 `json:"moved"`
}

// PeekResult is the answer of a peek.
type PeekResult struct {
	Messages []PeekMessage `json:"messages"`
}

// PeekMessage is a stored message as a peek shows it.
type PeekMessage struct {
	Sequence   uint64            `json:"sequence"`
	Time       time.Time         `json:"time"`
	Properties map[string]string `json:"properties,omitempty"`
	Size       int               `json:"size"`
	Body       string            `json:"body"`
	Encoding   string            `json:"encoding"` // "utf-8" or "base64"
	Truncated  bool              `json:"truncated,omitempty"`
}

// peekPreview is how much of a body a peek shows.
const peekPreview = 1024

// queueAddress finds the path's tenant and address, or writes 404; it
// also answers 404 when the queue actions are not wired.
func (s *Server) queueAddress(w http.ResponseWriter, r *http.Request) (tenantName, name string, ok bool) {
	if s.cfg.Observe.Queues == nil {
		writeError(w, CodeNotFound, "queue actions are not available on this node")
		return "", "", false
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return "", "", false
	}
	a, ok := s.lookupAddress(w, r, t)
	if !ok {
		return "", "", false
	}
	return t.Name, a.Name, true
}

func (s *Server) purgeAddress(w http.ResponseWriter, r *http.Request) {
	t, name, ok := s.queueAddress(w, r)
	if !ok {
		return
	}
	n, err := s.cfg.Observe.Queues.Purge(r.Context(), t, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PurgeResult{Purged: n})
}

func (s *Server) peekAddress(w http.ResponseWriter, r *http.Request) {
	t, name, ok := s.queueAddress(w, r)
	if !ok {
		return
	}
	limit, ok := queryLimit(w, r, 10, 100)
	if !ok {
		return
	}
	msgs, err := s.cfg.Observe.Queues.Peek(r.Context(), t, name, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := PeekResult{Messages: make([]PeekMessage, 0, len(msgs))}
	for _, sm := range msgs {
		out.Messages = append(out.Messages, peekView(sm))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) moveMessages(w http.ResponseWriter, r *http.Request) {
	t, name, ok := s.queueAddress(w, r)
	if !ok {
		return
	}
	to := r.URL.Query().Get("to")
	if to == "" {
		writeError(w, CodeInvalid, "to: the address to move the messages to is required")
		return
	}
	if to == name {
		writeError(w, CodeInvalid, "to: the messages are already there")
		return
	}
	if _, ok := s.cfg.Store.Address(t, to); !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("address %q not found in tenant %q", to, t))
		return
	}
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, CodeInvalid, "limit: a whole number from 1")
			return
		}
		limit = n
	}
	n, err := s.cfg.Observe.Queues.Move(r.Context(), t, name, to, limit)
	if err != nil {
		if n > 0 {
			s.log.Warn("move stopped", "tenant", t, "from", name, "to", to, "moved", n, "err", err)
		}
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, MoveResult{Moved: n})
}

// peekView renders a stored message: its properties as strings and a
// preview of its body, base64 when it is not UTF-8.
func peekView(sm router.StoredMessage) PeekMessage {
	m := sm.Message
	pm := PeekMessage{Sequence: sm.Sequence, Time: sm.Time, Properties: peekProperties(m)}
	body := m.Body
	pm.Size = len(body)
	if m.Body == nil && m.Large != nil {
		pm.Size = m.Large.BodyLen
	}
	if len(body) > peekPreview {
		body, pm.Truncated = body[:peekPreview], true
		// Do not cut a UTF-8 sequence in two.
		for i := 0; i < utf8.UTFMax && len(body) > 0 && !utf8.Valid(body); i++ {
			body = body[:len(body)-1]
		}
	}
	if pm.Size > len(body) {
		pm.Truncated = true
	}
	if utf8.Valid(body) {
		pm.Body, pm.Encoding = string(body), "utf-8"
	} else {
		pm.Body, pm.Encoding = base64.StdEncoding.EncodeToString(body), "base64"
	}
	return pm
}

func peekProperties(m *message.Message) map[string]string {
	p := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	if m.MessageID != nil {
		set("message-id", fmt.Sprint(m.MessageID))
	}
	if m.CorrelationID != nil {
		set("correlation-id", fmt.Sprint(m.CorrelationID))
	}
	set("to", m.To)
	set("subject", m.Subject)
	set("reply-to", m.ReplyTo)
	set("content-type", m.ContentType)
	set("content-encoding", m.ContentEncoding)
	set("group-id", m.GroupID)
	if !m.CreationTime.IsZero() {
		set("creation-time", m.CreationTime.UTC().Format(time.RFC3339Nano))
	}
	if !m.Expiry.IsZero() {
		set("absolute-expiry-time", m.Expiry.UTC().Format(time.RFC3339Nano))
	}
	if m.Priority != 0 {
		set("priority", strconv.Itoa(int(m.Priority)))
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := m.Properties[k].(type) {
		case []byte:
			p[k] = base64.StdEncoding.EncodeToString(v)
		case nil:
			p[k] = ""
		default:
			p[k] = fmt.Sprint(v)
		}
	}
	if len(p) == 0 {
		return nil
	}
	return p
}
