package router

import (
	"context"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// Replicas of what the router creates in the engine.
//
// Every stream the router creates or updates goes through replicated,
// and its one key-value bucket (StateBucket) takes ts.replicas: the
// engine decides the count (engine.Replicas: 1 on a single node, min(3,
// nodes) or the configured count in a cluster). Consumers are created
// with Replicas 0, which gives them their stream's. The system account's
// buckets are the tenant and registry stores' (tenant.WithReplicas,
// registry.WithReplicas), set by app from the same engine.Replicas.

// replicated returns sc with the account's replica count.
func (ts *tenantState) replicated(sc jetstream.StreamConfig) jetstream.StreamConfig {
	if ts.replicas > 0 {
		sc.Replicas = ts.replicas
	}
	return sc
}

// createOrUpdate creates the stream or brings it to sc, with the
// account's replicas. A stream that exists with the same settings is
// used as it is: in a cluster an update needs every replica's node, and
// a node that merely starts using a stream must not fail because
// another node is down. In a cluster, an update the engine refuses
// leaves the existing stream in use (UpdateAddress, which applies limits
// an operator asked for, updates strictly).
func (ts *tenantState) createOrUpdate(ctx context.Context, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	sc = ts.replicated(sc)
	// retryAPI: right after a node's death the lookup may go unanswered
	// until the election is over (pull.go).
	existing, lerr := retryAPI(ctx, func(ctx context.Context) (jetstream.Stream, error) { return ts.js.Stream(ctx, sc.Name) })
	if lerr == nil && sameStreamConfig(existing.CachedInfo().Config, sc) {
		return existing, nil
	}
	// Asked again too: nodes creating the same stream at once (clients
	// of a new tenant arriving on every node) had a creation go
	// unanswered, and a publisher's first QoS 1 message was refused with
	// "router: topic space: context deadline exceeded"
	// (TestSubscribeInForceAcrossNodes). The same configuration again is
	// no change.
	s, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Stream, error) { return ts.js.CreateOrUpdateStream(ctx, sc) })
	if err != nil && lerr == nil && ts.replicas > 1 {
		return existing, nil // a single node reports it, as it always did
	}
	return s, err
}

// sameStreamConfig compares what the router sets, with the engine's
// defaults for zero limits.
func sameStreamConfig(have, want jetstream.StreamConfig) bool {
	lim := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	if !slices.Equal(slices.Sorted(slices.Values(have.Subjects)), slices.Sorted(slices.Values(want.Subjects))) {
		return false
	}
	for k, v := range want.Metadata {
		if have.Metadata[k] != v {
			return false
		}
	}
	return have.Retention == want.Retention && have.Storage == want.Storage && have.Discard == want.Discard &&
		lim(have.MaxMsgs) == lim(want.MaxMsgs) && lim(have.MaxBytes) == lim(want.MaxBytes) &&
		lim(int64(have.MaxMsgSize)) == lim(int64(want.MaxMsgSize)) &&
		lim(have.MaxMsgsPerSubject) == lim(want.MaxMsgsPerSubject) && have.MaxAge == want.MaxAge &&
		max(have.Replicas, 1) == max(want.Replicas, 1) && have.AllowMsgTTL == want.AllowMsgTTL &&
		have.AllowRollup == want.AllowRollup && have.AllowDirect == want.AllowDirect &&
		have.Description == want.Description
}
