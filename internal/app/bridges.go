package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/bridge"
	"github.com/throngmq/throng/internal/tenant"
)

// bridgeSet is the node's bridges (internal/bridge, docs/bridges.md):
// their definitions' store and the manager that runs them.
type bridgeSet struct {
	store *bridge.Store
	mg    *bridge.Manager
}

// startBridges opens the bridge definitions and runs them; called once
// the router exists, before the admin API, which manages them.
func (a *App) startBridges(ctx context.Context) error {
	a.mu.Lock()
	nc, eng, store, rt, reg := a.sysConn, a.eng, a.store, a.router, a.registry
	a.mu.Unlock()
	replicas := 1
	if rp, ok := any(eng).(interface{ Replicas() int }); ok {
		replicas = rp.Replicas()
	}
	bs, err := retryInCluster(ctx, a, "bridge store", func(ctx context.Context) (*bridge.Store, error) { // cluster.go
		return bridge.OpenStore(ctx, nc, store, a.log.With("component", "bridge"), replicas)
	})
	if err != nil {
		return fmt.Errorf("app: bridges: %w", err)
	}
	mg := bridge.NewManager(bs, rt, a.log, reg)
	if !a.set(func() { a.bridges = bridgeSet{store: bs, mg: mg} }) {
		bs.Close()
		return errors.New("app: shut down during start")
	}
	mg.Start()
	return nil
}

// stopBridges stops the bridges (before the router they use).
func (a *App) stopBridges() {
	a.mu.Lock()
	b := a.bridges
	a.mu.Unlock()
	if b.mg != nil {
		b.mg.Close()
	}
	if b.store != nil {
		b.store.Close()
	}
}

// adminStore is the tenant store the admin API reads, with the bridges
// (admin.BridgeService) when they run.
func (a *App) adminStore() admin.Store {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bridges.mg == nil {
		return a.store
	}
	return storeWithBridges{a.store, a.bridges.mg}
}

type storeWithBridges struct {
	*tenant.Store
	*bridge.Manager
}
