package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/config"
)

// errRevoked fails the TLS handshake of a client whose certificate (or one
// of its intermediates) tls.crl lists.
var errRevoked = errors.New("client certificate revoked (tls.crl)")

// withCRL makes conf refuse client certificates r revokes, before the
// checks already configured (auth.ConfigureTLS). Go's own chain
// verification (tls.clientCA without devices) runs before it.
func withCRL(conf *tls.Config, r *crlReloader) {
	prev := conf.VerifyPeerCertificate
	conf.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := r.check(raw); err != nil {
			return err
		}
		if prev != nil {
			return prev(raw, chains)
		}
		return nil
	}
}

// crlReloader holds the revoked (issuer, serial number) pairs of tls.crl,
// reloaded when the file's modification time changes (checked at most
// once a second, at a handshake). A file that cannot be read or parsed
// later keeps the last good list, with a warning: a broken renewal must
// not let revoked certificates back in, nor lock every client out.
//
// The list is the operator's: its signature is not checked against the
// issuer (the file is trusted as configured, like tls.clientCA), and a
// list past its NextUpdate still applies (with a warning at load).
type crlReloader struct {
	file string
	log  *slog.Logger

	mu      sync.Mutex
	mod     time.Time
	checked time.Time
	revoked map[string]struct{} // RawIssuer + "\x00" + serial bytes; guarded by mu
}

func (r *crlReloader) load() error {
	st, err := os.Stat(r.file)
	if err != nil {
		return fmt.Errorf("app: tls.crl: %w", err)
	}
	b, err := os.ReadFile(r.file)
	if err != nil {
		return fmt.Errorf("app: tls.crl: %w", err)
	}
	crls, err := config.ParseCRLs(b)
	if err != nil {
		return fmt.Errorf("app: tls.crl %s: %w", r.file, err)
	}
	revoked := map[string]struct{}{}
	for _, crl := range crls {
		for _, e := range crl.RevokedCertificateEntries {
			revoked[crlKey(crl.RawIssuer, e.SerialNumber.Bytes())] = struct{}{}
		}
		if !crl.NextUpdate.IsZero() && time.Now().After(crl.NextUpdate) {
			r.log.Warn("tls.crl is past its next update; still applied: renew it", "component", "app",
				"file", r.file, "issuer", crl.Issuer.String(), "next_update", crl.NextUpdate)
		}
	}
	r.mu.Lock()
	r.revoked, r.mod, r.checked = revoked, st.ModTime(), time.Now()
	r.mu.Unlock()
	r.log.Info("tls.crl loaded", "component", "app", "file", r.file, "revoked", len(revoked))
	return nil
}

func crlKey(issuer, serial []byte) string { return string(issuer) + "\x00" + string(serial) }

// check refuses raw (a client's chain, leaf first) if the list revokes
// one of its certificates.
func (r *crlReloader) check(raw [][]byte) error {
	if len(raw) == 0 {
		return nil
	}
	r.reload()
	r.mu.Lock()
	revoked := r.revoked
	r.mu.Unlock()
	if len(revoked) == 0 {
		return nil
	}
	for _, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		if _, ok := revoked[crlKey(c.RawIssuer, c.SerialNumber.Bytes())]; ok {
			return fmt.Errorf("%w: serial %s, issuer %s", errRevoked, c.SerialNumber, c.Issuer)
		}
	}
	return nil
}

// reload loads the file again if it changed.
func (r *crlReloader) reload() {
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.checked) < time.Second {
		r.mu.Unlock()
		return
	}
	r.checked = now
	mod := r.mod
	r.mu.Unlock()
	st, err := os.Stat(r.file)
	if err != nil || st.ModTime().Equal(mod) {
		return
	}
	if err := r.load(); err != nil {
		r.log.Warn("tls.crl changed but cannot be loaded; the previous list still applies", "component", "app", "err", err)
		r.mu.Lock()
		r.mod = st.ModTime() // warn once per change
		r.mu.Unlock()
	}
}
