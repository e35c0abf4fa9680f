package router

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
)

// State is a key-value bucket in a tenant's own account, for the state a
// front-end keeps in the engine (MQTT sessions, pending wills). Keys are
// arbitrary strings (encoded for the engine); values are opaque.
type State struct {
	kv jetstream.KeyValue
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
	return &State{kv: kv}, nil
}

func stateKey(k string) string { return "k" + base64.RawURLEncoding.EncodeToString([]byte(k)) }

// Get returns a value and its revision; ErrNoState if absent.
func (s *State) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.kv.Get(ctx, stateKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNoState
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
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

// Keys lists the keys present.
func (s *State) Keys(ctx context.Context) ([]string, error) {
	lister, err := s.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range lister.Keys() {
		b, err := base64.RawURLEncoding.DecodeString(k[1:])
		if err == nil {
			out = append(out, string(b))
		}
	}
	return out, nil
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
