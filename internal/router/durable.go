package router

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// DurablePending returns how many engine entries a durable subscription
// made by Consume (name, ConsumeOptions.Durable) has not had
// acknowledged: pending plus delivered and unacknowledged. Batched
// publishes share an entry (batch.go), so it is a lower bound of the
// messages. A missing subscription has 0. The bridge reports it as its
// lag (internal/bridge).
func (r *Router) DurablePending(ctx context.Context, tenantName, name, durable string) (uint64, error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return 0, err
	}
	stream := topicSpaceStream
	if a, ok := r.store.Address(tenantName, name); ok {
		if a.Type != "topic" {
			return 0, nil
		}
		stream = streamFor(a)
	}
	c, err := ts.js.Consumer(ctx, stream, consumerNameFor(name, durable))
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return ci.NumPending + uint64(ci.NumAckPending), nil
}
