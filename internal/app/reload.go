package app

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/guard"
)

// reloadable is what Reload re-reads: the TLS certificate and the
// revocation list (set by serverTLS when configured).
type reloadable struct {
	mu        sync.Mutex
	cert      *certReloader // nil: no tls.cert (self-signed) or no TLS listener
	crl       *crlReloader  // nil: no tls.crl
	routeCert *certReloader // nil: no cluster.tls (cluster.go)
	routeCA   *caReloader   // nil: no cluster.tls (cluster.go)
}

func (r *reloadable) setCert(c *certReloader) { r.mu.Lock(); r.cert = c; r.mu.Unlock() }
func (r *reloadable) setCRL(c *crlReloader)   { r.mu.Lock(); r.crl = c; r.mu.Unlock() }

// Reload is what the node does on SIGHUP (cmd/throng serve):
//
//   - the TLS certificate and key (tls.cert, tls.key), the routes'
//     certificate, key and CA (cluster.tls.cert, .key, .ca) and the
//     revocation list (tls.crl) are read from their files again,
//     whatever their modification times: new handshakes use them,
//     established connections keep theirs. A pair, CA or list that does
//     not load keeps the one in force, and is reported in the error;
//   - with cfg (the configuration read again: file, environment, flags),
//     the connection guard's limits take cfg's values: connections.
//     ratePerSource, burstPerSource, maxHalfOpen, maxHalfOpenPerSource
//     and unlimitedSources (for the guard; the login backoff keeps the
//     exemptions it started with). Every other setting is read at start
//     only; a change to one is logged as needing a restart.
//
// The files' paths are the ones the node started with.
func (a *App) Reload(cfg *config.Config) error {
	var errs []error
	a.reload.mu.Lock()
	cert, crl, routeCert, routeCA := a.reload.cert, a.reload.crl, a.reload.routeCert, a.reload.routeCA
	a.reload.mu.Unlock()
	if routeCA != nil {
		if n, err := routeCA.force(); err != nil {
			errs = append(errs, err)
			a.log.Warn("reload: cluster.tls.ca not loaded; the CA in force stays", "component", "app", "err", err)
		} else {
			a.log.Info("reload: cluster.tls.ca loaded", "component", "app", "ca", routeCA.file, "certificates", n)
		}
	}
	if routeCert != nil {
		if err := routeCert.force(); err != nil {
			errs = append(errs, fmt.Errorf("cluster.tls: %w", err))
			a.log.Warn("reload: cluster.tls.cert not loaded; the certificate in force stays", "component", "app", "err", err)
		} else {
			a.log.Info("reload: cluster.tls.cert loaded", "component", "app", "cert", routeCert.cert)
		}
	}
	if cert != nil {
		if err := cert.force(); err != nil {
			errs = append(errs, err)
			a.log.Warn("reload: tls.cert not loaded; the certificate in force stays", "component", "app", "err", err)
		} else {
			attrs := []any{"component", "app", "cert", cert.cert}
			cert.mu.Lock()
			if c := cert.cur; c != nil && len(c.Certificate) > 0 {
				if x, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
					attrs = append(attrs, "subject", x.Subject.String(), "serial", x.SerialNumber.String(), "not_after", x.NotAfter)
				}
			}
			cert.mu.Unlock()
			a.log.Info("reload: tls.cert loaded", attrs...)
		}
	}
	if crl != nil {
		if err := crl.load(); err != nil {
			errs = append(errs, err)
			a.log.Warn("reload: tls.crl not loaded; the list in force stays", "component", "app", "err", err)
		}
	}
	if cfg != nil {
		if err := a.reloadSettings(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reloadSettings applies cfg's reloadable settings and logs the others
// that changed.
func (a *App) reloadSettings(cfg *config.Config) error {
	c := cfg.Connections
	unlimited, err := config.Prefixes(c.UnlimitedSources)
	if err != nil {
		a.log.Warn("reload: connections.unlimitedSources invalid; nothing changed", "component", "app", "err", err)
		return fmt.Errorf("app: reload: connections.unlimitedSources: %w", err)
	}
	if a.guard != nil {
		a.guard.SetLimits(guard.Config{
			RatePerSource:        float64(c.RatePerSource),
			BurstPerSource:       c.BurstPerSource,
			MaxHalfOpen:          c.MaxHalfOpen,
			MaxHalfOpenPerSource: c.MaxHalfOpenPerSource,
			Exempt:               unlimited,
		})
		a.log.Info("reload: connection guard limits", "component", "app",
			"rate_per_source", c.RatePerSource, "burst_per_source", c.BurstPerSource,
			"max_half_open", c.MaxHalfOpen, "max_half_open_per_source", c.MaxHalfOpenPerSource,
			"unlimited_sources", c.UnlimitedSources)
	}
	// What else changed needs a restart: the started configuration with
	// the reloaded settings in place, compared with the new one.
	started := *a.cfg
	started.Connections.RatePerSource, started.Connections.BurstPerSource = c.RatePerSource, c.BurstPerSource
	started.Connections.MaxHalfOpen, started.Connections.MaxHalfOpenPerSource = c.MaxHalfOpen, c.MaxHalfOpenPerSource
	started.Connections.UnlimitedSources = c.UnlimitedSources
	was, err1 := started.YAML()
	now, err2 := cfg.YAML()
	if err1 == nil && err2 == nil && string(was) != string(now) {
		a.log.Warn("reload: settings other than the connection guard's changed; they apply at the next start", "component", "app")
	}
	return nil
}
