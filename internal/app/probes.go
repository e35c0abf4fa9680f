package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/throngmq/throng/internal/admin"
)

// The admin listener opens first thing at start, before the engine,
// because the engine of a clustered node may wait minutes for its peers
// (a meta leader, enough nodes online): a StatefulSet starts its pods in
// parallel and the first pods wait for the last. Kubernetes' liveness
// probe (GET /healthz) must be answered meanwhile, or the waiting pod is
// killed and the cluster never forms; readiness (/readyz) stays 503
// until the node is ready. Until the admin API is built (startAdmin),
// the listener answers /healthz 200 and everything else 503 not_ready.

// adminSwitch serves the starting probes until set gives it the API.
type adminSwitch struct {
	api atomic.Pointer[http.Handler]
}

func (s *adminSwitch) set(h http.Handler) { s.api.Store(&h) }

func (s *adminSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := s.api.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.URL.Path == "/healthz" {
		// The process is alive and starting: as the API's /healthz.
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok"})
		return
	}
	// As the API's answer while not ready (admin.CodeNotReady).
	var b admin.ErrorBody
	b.Error.Code, b.Error.Message = admin.CodeNotReady, "starting"
	w.Header().Set("Retry-After", "5")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(b)
}

// listenAdmin opens the admin listener (listeners.admin; none when
// empty) with the starting probes behind it.
func (a *App) listenAdmin() error {
	addr := a.cfg.Listeners.Admin
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("app: admin listener: %w", err)
	}
	ln = a.guarded(ln, "admin")
	srv := &http.Server{
		Handler: &a.adminMux,

		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.With("component", "admin").Handler(), slog.LevelWarn),
	}
	if !a.set(func() { a.adminLn, a.adminSrv = ln, srv }) {
		ln.Close()
		return errors.New("app: shut down during start")
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveErr <- err
		}
	}()
	// Not "admin listening": that line says the API is up (tests and
	// scripts wait for it).
	a.log.Info("health probes listening; the admin API follows once the node has started", "component", "admin", "addr", ln.Addr().String())
	return nil
}
