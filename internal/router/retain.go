package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
)

// Retained messages: one per name, kept in the tenant's RETAINED stream
// (subjects r.<name>, at most one message per subject), so they are
// cluster-consistent and survive restarts. Front-ends use them for MQTT
// retained messages; they are independent of the address type.
const retainedStream = "RETAINED"

// MaxRetainedScan bounds how many retained messages one Retained call
// returns, so a "#" subscription cannot make a node read without limit.
const MaxRetainedScan = 100000

func (r *Router) ensureRetained(ctx context.Context, ts *tenantState) error {
	ts.mu.Lock()
	ok := ts.streams[retainedStream]
	ts.mu.Unlock()
	if ok {
		return nil
	}
	_, err := ts.createOrUpdate(ctx, (jetstream.StreamConfig{
		Name:              retainedStream,
		Subjects:          []string{"r.>"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		Discard:           jetstream.DiscardOld,
		AllowMsgTTL:       true,
		AllowRollup:       true,
		Description:       "retained messages, one per name",
	}))
	if err != nil {
		return fmt.Errorf("router: retained stream: %w", err)
	}
	ts.mu.Lock()
	ts.streams[retainedStream] = true
	ts.mu.Unlock()
	return nil
}

// Retain stores m as the retained message of name in a tenant, replacing
// the previous one; a nil m or an empty body clears it. It returns once
// the engine has stored (or removed) it.
func (r *Router) Retain(ctx context.Context, tenantName, name string, m *message.Message) error {
	if err := address.ValidateName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return err
	}
	if err := r.ensureRetained(ctx, ts); err != nil {
		return err
	}
	subj := address.Subject("r", name)
	if m == nil || (len(m.Body) == 0 && len(m.Native) == 0) {
		s, err := ts.js.Stream(ctx, retainedStream)
		if err != nil {
			return err
		}
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return fmt.Errorf("router: clear retained %q: %w", name, err)
		}
		return nil
	}
	if err := r.checkRetained(ctx, ts, subj); err != nil {
		return err
	}
	nm := &nats.Msg{Subject: subj, Data: m.Marshal(), Header: nats.Header{}}
	if !m.Expiry.IsZero() {
		ttl := clock.Until(m.Expiry)
		if ttl < time.Second {
			ttl = time.Second
		}
		nm.Header.Set("Nats-TTL", fmt.Sprintf("%ds", int64((ttl+time.Second-1)/time.Second)))
	}
	if err := ts.checkStored(len(subj) + len(nm.Data)); err != nil {
		return err // maxStoredBytes (quota.go)
	}
	if _, err := ts.js.PublishMsg(ctx, nm); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			return ts.storeError(int(apiErr.ErrorCode), apiErr.Description)
		}
		return fmt.Errorf("router: retain %q: %w", name, err)
	}
	return nil
}

// Retained calls fn with every unexpired retained message whose name
// matches the MQTT-style filter (at most MaxRetainedScan of them). As in
// MQTT, wildcards at the first level do not match names starting with '$'.
func (r *Router) Retained(ctx context.Context, tenantName, filter string, fn func(name string, m *message.Message)) error {
	if err := address.ValidateFilter(filter); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return err
	}
	if err := r.ensureRetained(ctx, ts); err != nil {
		return err
	}
	if !address.IsWildcard(filter) {
		// One name: read its last message directly. Each request asked
		// again after apiTry (pull.go): in a cluster, one sent while the
		// stream's group has no leader yet (just created by a subscriber
		// on another node, an election after a kill) is answered by
		// nobody, and the MQTT connection's reads waited the whole 15 s
		// (TestSubscribeInForceAcrossNodes under load).
		s, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Stream, error) { return ts.js.Stream(ctx, retainedStream) })
		if err != nil {
			return fmt.Errorf("router: read retained: %w", err)
		}
		raw, err := retryAPI(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
			return s.GetLastMsgForSubject(ctx, address.Subject("r", filter))
		})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("router: read retained: %w", err)
		}
		if m, err := message.Unmarshal(raw.Data); err == nil && !m.Expired(clock.Now()) {
			fn(filter, m)
		}
		return nil
	}
	cons, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return ts.js.OrderedConsumer(ctx, retainedStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: address.FilterSubjects("r", filter),
			DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		})
	})
	if err != nil {
		return fmt.Errorf("router: read retained: %w", err)
	}
	info, err := retryAPI(ctx, func(ctx context.Context) (*jetstream.ConsumerInfo, error) { return cons.Info(ctx) })
	if err != nil {
		return fmt.Errorf("router: read retained: %w", err)
	}
	left := int(info.NumPending)
	if left > MaxRetainedScan {
		left = MaxRetainedScan
	}
	now := clock.Now()
	for left > 0 {
		batch, err := cons.Fetch(min(left, 256), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("router: read retained: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			name, err := address.NameFromSubject("r", msg.Subject())
			if err != nil || !address.Match(filter, name) {
				continue
			}
			m, err := message.Unmarshal(msg.Data())
			if err != nil || m.Expired(now) {
				continue
			}
			fn(name, m)
		}
		if got == 0 {
			break
		}
		left -= got
	}
	return nil
}
