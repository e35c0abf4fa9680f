package engine

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// Tenant store quotas (docs/security.md "Plans and quotas"): a tenant's
// maxStoredBytes is its account's JetStream MaxStore, so the engine
// refuses a stored message that would pass it (the publish acknowledgement
// carries error code 10002, "resource limits exceeded for account"), on
// every stream of the account: queues, topics, the topic space, retained
// messages and the front-ends' state buckets (MQTT sessions).

// ErrAccountLimit is the JetStream error code of a stored message refused
// by the account's limits.
const ErrAccountLimit = 10002

// SetStoreLimit sets the bytes an ensured account may store on file
// (maxStore <= 0: unlimited). It applies to the next stored message; what
// is stored already is kept, also when it is over the new limit.
func (e *Engine) SetStoreLimit(account string, maxStore int64) error {
	e.mu.Lock()
	acc, ok := e.accounts[account]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("engine: account %q not registered", account)
	}
	if maxStore <= 0 {
		maxStore = -1
	}
	if acc.JetStreamUsage().Limits.MaxStore == maxStore {
		return nil // unchanged: the tenant's watch fires on every change of it
	}
	limits := map[string]server.JetStreamAccountLimits{
		"": {MaxMemory: -1, MaxStore: maxStore, MaxStreams: -1, MaxConsumers: -1},
	}
	if err := acc.UpdateJetStreamLimits(limits); err != nil {
		return fmt.Errorf("engine: store limit of %q: %w", account, err)
	}
	return nil
}

// StoreUsed is the bytes an ensured account stores on file (0 when it
// is not registered).
func (e *Engine) StoreUsed(account string) int64 {
	e.mu.Lock()
	acc, ok := e.accounts[account]
	e.mu.Unlock()
	if !ok {
		return 0
	}
	return int64(acc.JetStreamUsage().Store)
}
