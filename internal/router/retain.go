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
	cons, info, err := r.retainedReader(ctx, ts, filter)
	if err != nil {
		return fmt.Errorf("router: read retained: %w", err)
	}
	left := int(info.NumPending)
	if left > MaxRetainedScan {
		left = MaxRetainedScan
	}
	now := clock.Now()
	// A fetch may come back empty or fail while messages are pending: a
	// consumer just placed on a node that is busy catching up (a node
	// resumed after SIGSTOP answered nothing for seconds, and the
	// subscription got none of its 2,000 retained messages). Fetched
	// again until retainedReadMax has passed.
	deadline := time.Now().Add(retainedReadMax)
	for {
		if left == 0 && r.eng.Clustered() && time.Now().Before(deadline) {
			// The consumer's replica may have applied a write the leader
			// had acknowledged only after the consumer counted what was
			// pending (the last of 2,000 retained messages missed once):
			// it delivers such messages as new ones; ask once more.
			if info, err := cons.Info(ctx); err == nil {
				left = min(int(info.NumPending), MaxRetainedScan)
			}
		}
		if left == 0 {
			break
		}
		batch, err := cons.Fetch(min(left, 256), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if time.Now().Before(deadline) && ctx.Err() == nil {
				continue
			}
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
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			r.log.Debug("retained fetch", "tenant", ts.name, "filter", filter, "err", err)
		}
		if got == 0 {
			if time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			// Still pending by the consumer's count? (Retained messages
			// that expired meanwhile are not: no waiting for them.)
			info, err := cons.Info(ctx)
			if err == nil && info.NumPending == 0 {
				break
			}
			if err == nil {
				left = min(int(info.NumPending), MaxRetainedScan)
			}
			continue
		}
		left -= got
	}
	return nil
}

// retainedReader makes the ordered consumer that reads the retained
// messages matching a wildcard filter.
//
// In a cluster JetStream places such a consumer (R1) on a random replica
// of the stream, and it reads that replica's store: a replica behind the
// leader — the stream's quorum acknowledges a write without it — gave a
// subscription stale retained messages or none (1,744 of 2,000 right
// after they were written, TestRetainedWhileReplicaLags). So the consumer
// is kept only on the leader or on a replica the leader reports current
// with no lag; otherwise it is deleted and made again (placement is
// random), a little later each time, at most retainedPlacements times —
// the last one is kept whatever its replica's state (a node that stays
// behind must not stop subscriptions).
func (r *Router) retainedReader(ctx context.Context, ts *tenantState, filter string) (jetstream.Consumer, *jetstream.ConsumerInfo, error) {
	for try := 1; ; try++ {
		cons, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
			return ts.js.OrderedConsumer(ctx, retainedStream, jetstream.OrderedConsumerConfig{
				FilterSubjects: address.FilterSubjects("r", filter),
				DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
			})
		})
		if err != nil {
			return nil, nil, err
		}
		info, err := retryAPI(ctx, func(ctx context.Context) (*jetstream.ConsumerInfo, error) { return cons.Info(ctx) })
		if err != nil {
			return nil, nil, err
		}
		if !r.eng.Clustered() || try == retainedPlacements || info.Cluster == nil {
			return cons, info, nil
		}
		s, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Stream, error) { return ts.js.Stream(ctx, retainedStream) })
		if err != nil {
			return cons, info, nil // best effort: read what this replica has
		}
		if replicaCurrent(s.CachedInfo(), info.Cluster.Leader) {
			return cons, info, nil
		}
		_ = ts.js.DeleteConsumer(ctx, retainedStream, info.Name)
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(time.Duration(try) * 50 * time.Millisecond):
		}
	}
}

// retainedReadMax bounds a wildcard read of retained messages that makes
// no progress (fetches empty or failing while messages are pending).
const retainedReadMax = 10 * time.Second

// retainedPlacements bounds how many times retainedReader places its
// consumer (random placement among three replicas, one of them behind:
// the last try is on a current one with probability 1 − (1/3)^5).
const retainedPlacements = 6

// replicaCurrent reports whether, by the stream leader's account, node
// holds everything the leader has: it is the leader, or a replica that
// is online, current and not lagging.
func replicaCurrent(si *jetstream.StreamInfo, node string) bool {
	if si == nil || si.Cluster == nil || node == "" || node == si.Cluster.Leader {
		return true
	}
	for _, p := range si.Cluster.Replicas {
		if p.Name == node {
			return p.Current && !p.Offline && p.Lag == 0
		}
	}
	return false
}
