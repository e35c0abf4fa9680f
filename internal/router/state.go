package router

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
)

// State is a key-value bucket in a tenant's own account, for the state a
// front-end keeps in the engine (MQTT sessions, pending wills). Keys are
// arbitrary strings (encoded for the engine); values are opaque.
type State struct {
	kv jetstream.KeyValue
	// In a cluster (replicas > 1) reads go to the bucket's stream leader
	// (getLeader): a direct get, which kv.Get uses, may be answered by a
	// replica that has not applied the latest write yet, and a node
	// resuming an MQTT session another node just wrote must see that
	// write (its QoS 2 packet ids, the cluster soak's duplicates).
	js     jetstream.JetStream
	bucket string
	leader bool
}

// ErrNoState is returned by Get for a missing key and by StateBucket for a
// missing bucket when create is false.
var ErrNoState = errors.New("no such state")

// StateBucket opens the named bucket of a tenant, creating it if create is
// set. Names are [A-Za-z0-9_-]; the engine bucket is "state_<name>".
func (r *Router) StateBucket(ctx context.Context, tenantName, name string, create bool) (*State, error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return nil, err
	}
	bucket := "state_" + name
	var kv jetstream.KeyValue
	if create {
		// An existing bucket as it is (replicas.go: createOrUpdate).
		if kv, err = ts.js.KeyValue(ctx, bucket); errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = ts.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      bucket,
				Description: "front-end state " + name,
				History:     1,
				Storage:     jetstream.FileStorage,
				Replicas:    ts.replicas, // replicas.go
			})
		}
	} else {
		kv, err = ts.js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, ErrNoState
		}
	}
	if err != nil {
		return nil, fmt.Errorf("router: state bucket %s: %w", name, err)
	}
	return &State{kv: kv, js: ts.js, bucket: bucket, leader: ts.replicas > 1}, nil
}

func stateKey(k string) string { return "k" + base64.RawURLEncoding.EncodeToString([]byte(k)) }

// Get returns a value and its revision; ErrNoState if absent.
//
// In a cluster the value is the leader's: the latest written. While the
// bucket's stream has no leader (its node just died, an election under
// way: the members answer 503, or nothing), Get keeps asking until ctx
// ends, and then fails. It used to fall back after leaderReadWait to a
// direct get, which any replica answers — one that had not applied the
// latest write yet answered an MQTT session record without the token of
// the QoS 2 message its client was about to resend to this node, and the
// message was stored twice (the cluster soak's one duplicate, issue 16).
// For a CONNECT, waiting is better than refusing at once with 0x88
// (server unavailable): an election takes a few seconds, well within the
// CONNECT's 15 s, and the client connects without depending on its
// reconnect policy (some back off for long, some give up); if the
// election takes longer, the CONNECT is refused all the same when its
// time is up. Only a *present* value can be stale in the way that
// matters, so a replica's answer that the key is absent is taken after
// leaderReadWait: right after a cluster's start (a tenant's buckets just
// created, no leader yet) a first CONNECT waited its whole 15 s for the
// leader and failed (TestThreeNodes in CI), and its client has no
// session. What this leaves open: a record written less than a
// replica's lag before its leader died, read as absent there (a session
// created a moment before; a key deleted a moment before reads present
// and waits for the leader).
func (s *State) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	// Asked again after apiTry (pull.go): a read is answered by the
	// bucket's replicas, and one on a node that is stopped or cut off
	// (its peers and routes not yet aware) never answers: an MQTT
	// CONNECT's session lookup waited its whole 15 s and failed while a
	// node was SIGSTOPped (TestStopUnderLoad, issue 16).
	if !s.leader {
		return s.getDirect(ctx, key)
	}
	start := time.Now()
	askedReplica := false
	for {
		lctx, cancel := context.WithTimeout(ctx, leaderReadWait)
		v, rev, err := s.getFromLeader(lctx, key)
		cancel()
		if err == nil || errors.Is(err, ErrNoState) || ctx.Err() != nil {
			return v, rev, err
		}
		if !askedReplica && time.Since(start) >= leaderReadWait {
			askedReplica = true
			dctx, cancel := context.WithTimeout(ctx, leaderReadWait)
			_, _, derr := s.getDirect(dctx, key)
			cancel()
			if errors.Is(derr, ErrNoState) {
				return nil, 0, ErrNoState
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, err
		case <-time.After(leaderRetryWait):
		}
	}
}

// getDirect is a direct get: any replica answers.
func (s *State) getDirect(ctx context.Context, key string) ([]byte, uint64, error) {
	if h := testStateDirect.Load(); h != nil {
		return (*h)(key)
	}
	e, err := retryAPI(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return s.kv.Get(ctx, stateKey(key)) })
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNoState
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// getFromLeader is getLeader unless a test makes the leader fail.
func (s *State) getFromLeader(ctx context.Context, key string) ([]byte, uint64, error) {
	if h := testStateLeader.Load(); h != nil {
		if err := (*h)(key); err != nil {
			return nil, 0, err
		}
	}
	return s.getLeader(ctx, key)
}

// Test hooks: testStateLeader, when set, fails leader reads with its
// error (nil: read as usual); testStateDirect answers direct gets.
var (
	testStateLeader atomic.Pointer[func(key string) error]
	testStateDirect atomic.Pointer[func(key string) ([]byte, uint64, error)]
)

// leaderReadWait bounds each read from the stream leader, and is how
// long Get waits before it takes a replica's word that a key is absent;
// leaderRetryWait is the pause between reads while there is no leader.
const (
	leaderReadWait  = 2 * time.Second
	leaderRetryWait = 100 * time.Millisecond
)

// getLeader is Get answered by the bucket's stream leader: the engine's
// STREAM.MSG.GET request (what a KV get is without direct gets).
func (s *State) getLeader(ctx context.Context, key string) ([]byte, uint64, error) {
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{"$KV." + s.bucket + "." + stateKey(key)})
	if err != nil {
		return nil, 0, err
	}
	subj := jetstream.DefaultAPIPrefix + "STREAM.MSG.GET.KV_" + s.bucket
	m, err := retryAPI(ctx, func(ctx context.Context) (*nats.Msg, error) { return s.js.Conn().RequestWithContext(ctx, subj, req) })
	if err != nil {
		return nil, 0, fmt.Errorf("router: state %s: %w", s.bucket, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, 0, fmt.Errorf("router: state %s: %w", s.bucket, err)
	}
	if resp.Error != nil {
		if resp.Error.Code == 404 {
			return nil, 0, ErrNoState // no message for the key
		}
		return nil, 0, fmt.Errorf("router: state %s: code=%d err_code=%d %s", s.bucket, resp.Error.Code, resp.Error.ErrCode, resp.Error.Description)
	}
	if resp.Message == nil {
		return nil, 0, fmt.Errorf("router: state %s: empty answer", s.bucket)
	}
	if len(resp.Message.Hdrs) > 0 {
		// A deleted or purged key is a marker with KV-Operation.
		if h, err := nats.DecodeHeadersMsg(resp.Message.Hdrs); err == nil {
			if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
				return nil, 0, ErrNoState
			}
		}
	}
	return resp.Message.Data, resp.Message.Seq, nil
}

// Put stores a value and returns its revision.
func (s *State) Put(ctx context.Context, key string, val []byte) (uint64, error) {
	return s.kv.Put(ctx, stateKey(key), val)
}

// Delete removes a key; with rev > 0 only if it is still at that revision
// (so that two nodes acting on the same entry do it once).
func (s *State) Delete(ctx context.Context, key string, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev > 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err := s.kv.Delete(ctx, stateKey(key), opts...)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// keysWait bounds how long a key listing waits for its watcher: the
// listing creates a consumer on the bucket's stream, and in a cluster that
// request is not answered while the stream elects a new leader (its
// leader's node died): it waited for the caller's whole context — an MQTT
// CONNECT resuming a session held by a killed node hung for 15 s, and a
// sweep for 30 s, delaying the node's wills (TestMQTTSessionAcrossNodes,
// issue 16). A healthy engine creates it in milliseconds.
const keysWait = 5 * time.Second

// Keys lists the keys present. An error with keys is a listing cut short
// by ctx.
func (s *State) Keys(ctx context.Context) ([]string, error) {
	// The watcher's subscription ends with the context it was created
	// with (nats.go unsubscribes when it is done), so that context must
	// last the whole listing: only its creation is cut short, by a timer.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(keysWait, cancel)
	w, err := s.kv.WatchAll(wctx, jetstream.IgnoreDeletes(), jetstream.MetaOnly())
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded // cut short just after it was created
	}
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var out []string
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				// The end of the initial values, or the watcher ended
				// (its context did): a listing cut short is an error.
				return out, wctx.Err()
			}
			k := e.Key()
			if b, err := base64.RawURLEncoding.DecodeString(k[1:]); err == nil {
				out = append(out, string(b))
			}
		case <-wctx.Done():
			return out, wctx.Err()
		}
	}
}

// DeleteDurable removes the durable subscription that Consume created for
// (name, ConsumeOptions.Durable) on a topic or topic-space filter, with
// the messages it kept. Missing subscriptions are not an error.
func (r *Router) DeleteDurable(ctx context.Context, tenantName, name, durable string) error {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return err
	}
	stream := topicSpaceStream
	if a, ok := r.store.Address(tenantName, name); ok {
		if a.Type != "topic" {
			return nil // queues and others have no per-consumer durable state
		}
		stream = streamFor(a)
	}
	cname := consumerNameFor(name, durable)
	err = ts.js.DeleteConsumer(ctx, stream, cname)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return nil
}

// consumerNameFor is the engine name of the durable consumer Consume uses
// for a durable subscription (see startTopic).
func consumerNameFor(name, durable string) string {
	return address.ConsumerName("S", name+"::"+durable)
}
