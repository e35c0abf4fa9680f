package router

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Node coordination for front-ends whose state lives in the engine (MQTT
// session takeover across nodes): core signals in a tenant's account and
// conditional updates of State entries. Added for internal/mqtt.

// signalPrefix keeps signal subjects apart from every address subject.
const signalPrefix = "_throng.sig."

// ErrStateChanged is returned by Update when the entry is no longer at
// the revision given (another node changed or deleted it).
var ErrStateChanged = errors.New("state changed")

// Signal publishes data to every Listen on name in a tenant's account, on
// every node sharing the engine. At most once; nothing is stored.
func (r *Router) Signal(ctx context.Context, tenantName, name string, data []byte) error {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return err
	}
	if err := ts.nc.Publish(signalPrefix+name, data); err != nil {
		return fmt.Errorf("router: signal: %w", err)
	}
	return nil
}

// Listen calls fn (on an engine goroutine, one call at a time) for every
// Signal on name in a tenant, including this node's own, until stop.
func (r *Router) Listen(ctx context.Context, tenantName, name string, fn func(data []byte)) (stop func(), err error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return nil, err
	}
	sub, err := ts.nc.Subscribe(signalPrefix+name, func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("router: listen: %w", err)
	}
	// Make sure the interest is known before the caller relies on it.
	if err := ts.nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("router: listen: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Update stores a value only if the key is still at revision rev (rev 0:
// only if absent) and returns the new revision; ErrStateChanged otherwise.
func (s *State) Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	var (
		n   uint64
		err error
	)
	if rev == 0 {
		n, err = s.kv.Create(ctx, stateKey(key), val)
	} else {
		n, err = s.kv.Update(ctx, stateKey(key), val, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, ErrStateChanged
	}
	return n, err
}
