package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/amqp"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/guard"
	"github.com/throngmq/throng/internal/httpapi"
	"github.com/throngmq/throng/internal/mqtt"
)

// frontEnd is a protocol server: it serves connections from listeners
// and drains them on Shutdown.
type frontEnd interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// runningFront is a started front-end with its listeners.
type runningFront struct {
	name string
	fe   frontEnd
	http []*http.Server // WebSocket servers in front of it
}

// startFrontEnds builds the protocol servers and opens their listeners
// (plain, TLS and WebSocket). A listener that cannot be opened fails the
// start: a node that silently lacks a port is worse than one that stops.
func (a *App) startFrontEnds() error {
	l := a.cfg.Listeners
	var tlsConf *tls.Config
	if l.AMQPS != "" || l.MQTTS != "" || l.HTTPS != "" {
		var err error
		if tlsConf, err = a.serverTLS(); err != nil {
			return err
		}
	}
	if l.MQTT != "" || l.MQTTS != "" || l.MQTTWebSocket != "" {
		srv, err := mqtt.New(mqtt.Config{
			Router:          a.router,
			Auth:            a.authn,
			Store:           a.store,
			Logger:          a.log,
			Metrics:         a.registry,
			AllowAnonymous:  a.cfg.Anonymous,
			MaxPacketSize:   mqtt.PacketSizeFor(int(a.cfg.MaxMessageSize)),
			MaxKeepAlive:    uint16(time.Duration(a.cfg.MQTT.MaxKeepAlive) / time.Second),
			ConnectTimeout:  time.Duration(a.cfg.Connections.HandshakeTimeout),
			ReadTimeout:     time.Duration(a.cfg.Connections.ReadTimeout),
			MaxHandshakes:   a.cfg.Connections.MaxHandshakes,
			HandshakeMemory: int(a.cfg.Connections.HandshakeMemory),

			MaxQueuedMessages: a.cfg.MQTT.MaxQueuedMessages,
			QueueOverflow:     a.cfg.MQTT.QueueOverflow,
			Hono:              a.hono,
			Audit:             a.audit,
			Conns:             a.obs.registry(),
			// The node's name (as in connection ids): with it, a restart
			// takes over the sessions of the killed process at once.
			NodeName: a.obs.registry().Node(),
		})
		if err != nil {
			return fmt.Errorf("app: mqtt: %w", err)
		}
		rf := &runningFront{name: "mqtt", fe: srv}
		if err := a.serveOn(rf, "mqtt", l.MQTT, nil); err != nil {
			return err
		}
		if err := a.serveOn(rf, "mqtts", l.MQTTS, tlsConf); err != nil {
			return err
		}
		if err := a.serveWS(rf, "mqttWebSocket", l.MQTTWebSocket, "/mqtt", srv.ServeWebSocket()); err != nil {
			return err
		}
		a.mu.Lock()
		a.fronts = append(a.fronts, rf)
		a.mu.Unlock()
	}
	if l.AMQP != "" || l.AMQPS != "" || l.AMQPWebSocket != "" {
		srv, err := amqp.New(amqp.Config{
			Router:           a.router,
			Auth:             a.authn,
			Tenants:          a.store,
			Logger:           a.log,
			Metrics:          a.registry,
			AllowAnonymous:   a.cfg.Anonymous,
			TLSConfig:        tlsConf,
			MaxMessageSize:   uint64(a.cfg.MaxMessageSize),
			HandshakeTimeout: time.Duration(a.cfg.Connections.HandshakeTimeout),
			ReadTimeout:      time.Duration(a.cfg.Connections.ReadTimeout),
			MaxHandshakes:    a.cfg.Connections.MaxHandshakes,
			HandshakeMemory:  int(a.cfg.Connections.HandshakeMemory),
			Commands:         a.hono,
			Audit:            a.audit,
			Conns:            a.obs.registry(),
		})
		if err != nil {
			return fmt.Errorf("app: amqp: %w", err)
		}
		rf := &runningFront{name: "amqp", fe: srv}
		if err := a.serveOn(rf, "amqp", l.AMQP, nil); err != nil {
			return err
		}
		if err := a.serveOn(rf, "amqps", l.AMQPS, tlsConf); err != nil {
			return err
		}
		if err := a.serveWS(rf, "amqpWebSocket", l.AMQPWebSocket, "/", srv.ServeWebSocket()); err != nil {
			return err
		}
		a.mu.Lock()
		a.fronts = append(a.fronts, rf)
		a.mu.Unlock()
	}
	if l.HTTP != "" || l.HTTPS != "" {
		// Hono's HTTP adapter (docs/hono.md); client certificates on the
		// TLS listener through the shared tlsConf (auth.ConfigureTLS).
		srv, err := httpapi.New(httpapi.Config{
			Router:            a.router,
			Auth:              a.authn,
			Hono:              a.hono,
			Tenants:           a.store,
			Devices:           a.devices,
			Logger:            a.log,
			Metrics:           a.registry,
			MaxMessageSize:    int64(a.cfg.MaxMessageSize),
			ReadHeaderTimeout: time.Duration(a.cfg.Connections.HandshakeTimeout),
			ReadTimeout:       time.Duration(a.cfg.Connections.ReadTimeout),
			Audit:             a.audit,
		})
		if err != nil {
			return fmt.Errorf("app: http: %w", err)
		}
		rf := &runningFront{name: "http", fe: srv}
		if err := a.serveOn(rf, "http", l.HTTP, nil); err != nil {
			return err
		}
		if err := a.serveOn(rf, "https", l.HTTPS, tlsConf); err != nil {
			return err
		}
		a.mu.Lock()
		a.fronts = append(a.fronts, rf)
		a.mu.Unlock()
	}
	return nil
}

func (a *App) serveOn(rf *runningFront, name, addr string, tlsConf *tls.Config) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("app: %s listener %s: %w", name, addr, err)
	}
	a.recordListener(name, ln)
	ln = a.guarded(ln, name) // below TLS: a refusal costs no handshake
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	a.log.Info(name+" listening", "component", "app", "addr", ln.Addr().String())
	go func() {
		if err := rf.fe.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, mqtt.ErrServerClosed) && !errors.Is(err, amqp.ErrServerClosed) && !errors.Is(err, httpapi.ErrServerClosed) {
			a.log.Error("listener stopped", "component", "app", "listener", name, "err", err)
		}
	}()
	return nil
}

func (a *App) serveWS(rf *runningFront, name, addr, path string, h http.Handler) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("app: %s listener %s: %w", name, addr, err)
	}
	a.recordListener(name, ln)
	ln = a.guarded(ln, name)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	rf.http = append(rf.http, srv)
	a.log.Info(name+" listening", "component", "app", "addr", ln.Addr().String(), "path", path)
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func (a *App) recordListener(name string, ln net.Listener) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lns == nil {
		a.lns = map[string]net.Listener{}
	}
	a.lns[name] = ln
}

// ListenerAddr returns the bound address of a protocol listener by its
// setting name ("mqtt", "mqtts", "amqp", ...), or nil.
func (a *App) ListenerAddr(name string) net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ln, ok := a.lns[name]; ok {
		return ln.Addr()
	}
	return nil
}

// stopFrontEnds is steps 1 and 2 of Shutdown: stop accepting and drain.
func (a *App) stopFrontEnds(ctx context.Context, fronts []*runningFront) {
	for _, rf := range fronts {
		for _, h := range rf.http {
			_ = h.Close()
		}
		if err := rf.fe.Shutdown(ctx); err != nil {
			a.log.Warn("front-end did not drain in time", "component", "app", "front_end", rf.name, "err", err)
		}
	}
}

// newGuard makes the node's connection guard (internal/guard): one for
// every listener, so its caps count all protocols together.
func (a *App) newGuard(reg prometheus.Registerer, unlimited []netip.Prefix) {
	c := a.cfg.Connections
	a.guard = guard.New(guard.Config{
		RatePerSource:        float64(c.RatePerSource),
		BurstPerSource:       c.BurstPerSource,
		MaxHalfOpen:          c.MaxHalfOpen,
		MaxHalfOpenPerSource: c.MaxHalfOpenPerSource,
		Exempt:               unlimited,
		HandshakeTimeout:     time.Duration(c.HandshakeTimeout),
		Metrics:              reg,
		Logger:               a.log,
	})
}

// guarded wraps a listener (by its setting name) in the node's guard,
// with its protocol's refusal: MQTT closes (nothing to answer before
// CONNECT), AMQP sends its protocol header and closes, HTTP answers
// 429; TLS listeners close, since the refusal comes before the TLS
// handshake.
func (a *App) guarded(ln net.Listener, name string) net.Listener {
	if a.guard == nil {
		return ln
	}
	switch name {
	case "mqtt", "mqtts":
		return a.guard.Listener(ln, "mqtt", guard.RefuseClose, guard.Reported)
	case "amqp":
		return a.guard.Listener(ln, "amqp", guard.RefuseAMQP, guard.Reported)
	case "amqps":
		return a.guard.Listener(ln, "amqp", guard.RefuseClose, guard.Reported)
	case "https":
		return a.guard.Listener(ln, "http", guard.RefuseClose, guard.FirstByte)
	case "mqttWebSocket":
		return a.guard.Listener(ln, "mqtt", guard.RefuseHTTP, guard.FirstByte)
	case "amqpWebSocket":
		return a.guard.Listener(ln, "amqp", guard.RefuseHTTP, guard.FirstByte)
	case "admin":
		return a.guard.Listener(ln, "admin", guard.RefuseHTTP, guard.FirstByte)
	default: // http
		return a.guard.Listener(ln, "http", guard.RefuseHTTP, guard.FirstByte)
	}
}

// Guard returns the node's connection guard (tests read its counts).
func (a *App) Guard() *guard.Guard { return a.guard }

// serverTLS builds the TLS configuration shared by every TLS listener:
// tls.minVersion and tls.ciphers, the certificate (reloaded when its file
// changes), client certificates (auth.ConfigureTLS) and the revocation
// list (tls.crl, reloaded the same way). Without a configured certificate
// a self-signed one is generated for development, with a warning: clients
// must then skip verification.
func (a *App) serverTLS() (*tls.Config, error) {
	c := a.cfg.TLS
	minVersion, err := config.TLSVersion(c.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("app: tls.minVersion: %w", err)
	}
	suites, err := config.CipherSuites(c.Ciphers)
	if err != nil {
		return nil, fmt.Errorf("app: tls.ciphers: %w", err)
	}
	conf := &tls.Config{MinVersion: minVersion, CipherSuites: suites}
	if c.Cert != "" {
		// Reloaded on every handshake when the files change, so a renewed
		// certificate is picked up without a restart.
		r := &certReloader{cert: c.Cert, key: c.Key}
		if _, err := r.get(nil); err != nil {
			return nil, err
		}
		conf.GetCertificate = r.get
		a.reload.setCert(r)
	} else {
		cert, err := selfSigned()
		if err != nil {
			return nil, err
		}
		a.log.Warn("no TLS certificate configured; TLS listeners use a generated self-signed certificate", "component", "app")
		conf.Certificates = []tls.Certificate{cert}
	}
	var clientCAs *x509.CertPool
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("app: tls.clientCA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("app: tls.clientCA %s: no certificates", c.ClientCA)
		}
		clientCAs = pool
	}
	// Users' certificates chain to the client CA; devices' to their
	// tenants' trust anchors, which change at run time: auth sets up
	// the verification of both.
	a.authn.ConfigureTLS(conf, clientCAs)
	if c.CRL != "" {
		r := &crlReloader{file: c.CRL, log: a.log}
		if err := r.load(); err != nil {
			return nil, err
		}
		withCRL(conf, r)
		a.reload.setCRL(r)
	}
	return conf, nil
}

// certReloader serves a certificate from files, reloading them when their
// modification time changes.
type certReloader struct {
	cert, key string

	mu  sync.Mutex // handshakes run concurrently
	mod time.Time
	cur *tls.Certificate
}

// force loads the files now, whatever their modification time (SIGHUP:
// a renewal that kept the time, or a file system with coarse times). A
// pair that does not load keeps the current one, and is the error.
func (r *certReloader) force() error {
	st, err := os.Stat(r.cert)
	if err != nil {
		return fmt.Errorf("app: tls.cert: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return fmt.Errorf("app: tls: %w", err)
	}
	r.mu.Lock()
	r.cur, r.mod = &c, st.ModTime()
	r.mu.Unlock()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := os.Stat(r.cert)
	if err != nil {
		if r.cur != nil {
			return r.cur, nil
		}
		return nil, fmt.Errorf("app: tls.cert: %w", err)
	}
	if r.cur == nil || st.ModTime() != r.mod {
		c, err := tls.LoadX509KeyPair(r.cert, r.key)
		if err != nil {
			if r.cur != nil {
				return r.cur, nil
			}
			return nil, fmt.Errorf("app: tls: %w", err)
		}
		r.cur, r.mod = &c, st.ModTime()
	}
	return r.cur, nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "throng (self-signed)"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
