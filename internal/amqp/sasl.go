package amqp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// SASL mechanisms (RFC 4422; AMQP part 5.3).
const (
	mechAnonymous encoding.Symbol = "ANONYMOUS"
	mechPlain     encoding.Symbol = "PLAIN"
	mechExternal  encoding.Symbol = "EXTERNAL"
	mechScram     encoding.Symbol = "SCRAM-SHA-256" // RFC 7677
)

var errAuth = errors.New("amqp: authentication failed")

// handshake runs the protocol header exchange (part 2.2), TLS (part 5.2),
// SASL (part 5.3) and open, reading straight from the socket. Bytes the
// client pipelined after its open are kept in rest for the reader.
type handshake struct {
	c       *conn
	buf     []byte // read but not consumed
	rest    []byte
	out     []byte // our open, for the writer
	dec     frames.Decoder
	sasl    bool
	charged int    // bytes of the server's handshake memory budget held
	mech    string // the SASL mechanism chosen, for the audit log
	user    string // the user name the client claimed (PLAIN), for the audit log
}

// errHandshakeMemory: the server's handshake memory budget is spent.
var errHandshakeMemory = errors.New("amqp: handshake memory budget spent")

// fill reads until n bytes are buffered. The buffer grows with the bytes
// that arrive (frames before open are at most MaxFrameSize), and its
// growth is charged to the server's handshake memory budget.
func (h *handshake) fill(n int) error {
	for len(h.buf) < n {
		var tmp [4096]byte
		k, err := h.c.nc.Read(tmp[:])
		if old := cap(h.buf); len(h.buf)+k > old {
			h.buf = append(h.buf, tmp[:k]...)
			if !h.c.s.chargeHandshake(cap(h.buf) - old) {
				return errHandshakeMemory
			}
			h.charged += cap(h.buf) - old
		} else {
			h.buf = append(h.buf, tmp[:k]...)
		}
		if err != nil && len(h.buf) < n {
			return err
		}
	}
	return nil
}

// refund gives the handshake's memory budget back.
func (h *handshake) refund() {
	h.c.s.chargeHandshake(-h.charged)
	h.charged = 0
}

func (h *handshake) write(b []byte) error {
	_, err := h.c.nc.Write(b)
	return err
}

// readFrame reads one whole frame, skipping heartbeats.
func (h *handshake) readFrame() (frames.Frame, error) {
	for {
		if err := h.fill(frames.HeaderSize); err != nil {
			return frames.Frame{}, err
		}
		f, n, err := frames.ReadFrame(h.buf, h.c.s.cfg.MaxFrameSize)
		if errors.Is(err, frames.ErrNeedMore) {
			if err := h.fill(n); err != nil {
				return frames.Frame{}, err
			}
			continue
		}
		if err != nil {
			return frames.Frame{}, err
		}
		body := append([]byte(nil), f.Body...)
		f.Body = body
		h.buf = h.buf[n:]
		if len(body) == 0 {
			continue
		}
		return f, nil
	}
}

func (h *handshake) run() error {
	c := h.c
	_, isTLS := c.nc.(*tls.Conn)
	for {
		if err := h.fill(8); err != nil {
			return err
		}
		hdr, err := frames.ParseProtoHeader(h.buf)
		if err != nil {
			// Answer with the header we would accept, then close (part 2.2).
			_ = h.write(h.preferred().Append(nil))
			return err
		}
		h.buf = h.buf[8:]
		switch hdr.ID {
		case frames.ProtoTLS:
			if c.s.cfg.TLSConfig == nil || isTLS || h.sasl {
				_ = h.write(h.preferred().Append(nil))
				return errors.New("amqp: TLS not available")
			}
			if err := h.write(frames.HeaderTLS.Append(nil)); err != nil {
				return err
			}
			tc := tls.Server(&prefixConn{Conn: c.nc, pre: h.buf}, c.s.cfg.TLSConfig)
			h.buf = nil
			if err := tc.Handshake(); err != nil {
				return err
			}
			c.nc, isTLS = tc, true
			c.checkClientCert(tc)
		case frames.ProtoSASL:
			if h.sasl {
				return errors.New("amqp: second SASL header")
			}
			if err := h.write(frames.HeaderSASL.Append(nil)); err != nil {
				return err
			}
			if err := h.runSASL(); err != nil {
				return err
			}
			h.sasl = true
		case frames.ProtoAMQP:
			if !h.sasl {
				if c.principal = c.withoutCredentials(""); c.principal == nil {
					// SASL is required: say so with our header and close (part 5.3.1).
					_ = h.write(frames.HeaderSASL.Append(nil))
					return errors.New("amqp: client skipped the required SASL layer")
				}
			}
			if err := h.write(frames.HeaderAMQP.Append(nil)); err != nil {
				return err
			}
			return h.open()
		}
	}
}

func (h *handshake) preferred() frames.ProtoHeader {
	if !h.sasl && !h.c.anonymousAllowed() && !h.c.waivesAuthentication() {
		return frames.HeaderSASL
	}
	return frames.HeaderAMQP
}

func (c *conn) anonymousAllowed() bool { return c.s.cfg.AllowAnonymous && c.loopback() }

func (h *handshake) writeSASL(p frames.Performative) error {
	b, err := frames.AppendFrame(nil, frames.TypeSASL, 0, p, nil)
	if err != nil {
		return err
	}
	return h.write(b)
}

func (h *handshake) runSASL() error {
	c := h.c
	var mechs []encoding.Symbol
	if c.tlsVerified || c.deviceCert {
		mechs = append(mechs, mechExternal)
	}
	if c.s.cfg.Auth != nil {
		// SCRAM first: clients that choose by the server's order take the
		// mechanism that never sends the password.
		mechs = append(mechs, mechScram, mechPlain)
	}
	if c.anonymousAllowed() || c.waivesAuthentication() {
		mechs = append(mechs, mechAnonymous)
	}
	if err := h.writeSASL(&frames.SASLMechanisms{Mechanisms: mechs}); err != nil {
		return err
	}
	f, err := h.readFrame()
	if err != nil {
		return err
	}
	p, _, err := h.dec.DecodeFrame(f)
	if err != nil {
		return err
	}
	init, ok := p.(*frames.SASLInit)
	if !ok || f.Type != frames.TypeSASL {
		return fmt.Errorf("amqp: expected sasl-init, got %T", p)
	}
	offered := false
	for _, m := range mechs {
		offered = offered || m == init.Mechanism
	}
	resp := init.InitialResponse
	if offered && (init.Mechanism == mechPlain || init.Mechanism == mechScram) && len(resp) == 0 {
		// The client waits for an (empty) challenge before responding.
		if resp, err = h.challenge([]byte{}); err != nil {
			return err
		}
	}
	var authErr error
	var additional []byte // sasl-outcome additional-data (part 5.3.3.5)
	switch {
	case !offered:
		authErr = fmt.Errorf("%w: mechanism %q not offered", errAuth, init.Mechanism)
	case init.Mechanism == mechAnonymous:
		if c.principal = c.withoutCredentials(init.Hostname); c.principal == nil {
			authErr = fmt.Errorf("%w: no tenant lets devices connect without credentials", errAuth)
		}
	case init.Mechanism == mechPlain:
		authErr = h.plain(resp, init.Hostname)
	case init.Mechanism == mechExternal:
		authErr = h.external(resp, init.Hostname)
	case init.Mechanism == mechScram:
		if additional, authErr, err = h.scram(resp, init.Hostname); err != nil {
			return err
		}
	}
	code := frames.SASLOk
	h.mech = string(init.Mechanism)
	if authErr != nil {
		c.auditLogin(audit.LoginFailed, h, authErr)
		code = frames.SASLAuth
		if errors.Is(authErr, auth.ErrUnavailable) {
			code = frames.SASLSysTemp // the registry did not answer: the client may retry
		}
		c.s.m.authFail.Inc()
		if errors.Is(authErr, auth.ErrNoScramCredential) {
			c.log.Warn("scram-sha-256 refused: the user has no verifier until its password is set again; PLAIN still works", "err", authErr)
		} else {
			c.log.Debug("sasl authentication failed", "mechanism", string(init.Mechanism), "err", authErr)
		}
	}
	if err := h.writeSASL(&frames.SASLOutcome{Code: code, AdditionalData: additional}); err != nil {
		return err
	}
	return authErr
}

// challenge sends a sasl-challenge and returns the client's sasl-response.
func (h *handshake) challenge(b []byte) ([]byte, error) {
	if err := h.writeSASL(&frames.SASLChallenge{Challenge: b}); err != nil {
		return nil, err
	}
	f, err := h.readFrame()
	if err != nil {
		return nil, err
	}
	p, _, err := h.dec.DecodeFrame(f)
	if err != nil {
		return nil, err
	}
	r, ok := p.(*frames.SASLResponse)
	if !ok || f.Type != frames.TypeSASL {
		return nil, fmt.Errorf("amqp: expected sasl-response, got %T", p)
	}
	return r.Response, nil
}

// scram runs SCRAM-SHA-256 (RFC 5802, RFC 7677): first is the
// client-first message (the initial response); server-first goes out as a
// sasl-challenge, client-final comes back as a sasl-response, and
// server-final is returned for the outcome's additional-data. The tenant is
// the "@tenant" suffix of the user name, else the authzid, else the SASL
// hostname if it names a tenant, else the default tenant: the verifier is
// needed before the open, so the open hostname cannot choose it. err is
// an I/O or framing error; authErr a failed authentication.
func (h *handshake) scram(first []byte, hostname string) (final []byte, authErr, err error) {
	c := h.c
	ten := tenant.Default
	if t, ok := c.tenantFromHost(hostname); ok {
		ten = t
	}
	// Counted in the login backoff, as PLAIN is (auth.NewScramExchange).
	ctx, cancel := context.WithTimeout(c.s.authCtx, c.s.cfg.HandshakeTimeout)
	defer cancel()
	s := c.s.cfg.Auth.NewScramExchange(auth.WithSourceAddr(ctx, addrString(c.remote)), ten)
	out, _, serr := s.Step(first)
	if serr != nil {
		return nil, fmt.Errorf("%w: %w", errAuth, serr), nil
	}
	resp, err := h.challenge(out)
	if err != nil {
		return nil, nil, err
	}
	if out, _, serr = s.Step(resp); serr != nil {
		return nil, fmt.Errorf("%w: %w", errAuth, serr), nil
	}
	c.principal = s.Principal()
	return out, nil, nil
}

// plain checks PLAIN credentials: authzid NUL authcid NUL password. The
// tenant is, in order: the "@tenant" suffix of the user name, a non-empty
// authzid, the SASL hostname if it names a tenant, else the open hostname
// if it names a tenant, else the default tenant (see selectTenant). Name
// and password are used as sent, without the SASLprep that RFC 4616
// recommends: the stored bcrypt hashes are of passwords as set, and
// SCRAM alone prepares (docs/amqp.md, SCRAM-SHA-256).
func (h *handshake) plain(resp []byte, hostname string) error {
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		return fmt.Errorf("%w: malformed PLAIN response", errAuth)
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	h.user = user
	c := h.c
	if c.s.cfg.Auth == nil {
		return fmt.Errorf("%w: no authenticator", errAuth)
	}
	name, ten := auth.SplitUser(user, "")
	switch {
	case ten != "":
	case authz != "":
		ten = authz
	default:
		if t, ok := c.tenantFromHost(hostname); ok {
			ten = t
		}
	}
	if ten == "" {
		// The open hostname will tell (selectTenant): SASL succeeds
		// provisionally and a failure closes the connection after open
		// with amqp:unauthorized-access.
		c.plainUser, c.plainPass = name, pass
		return nil
	}
	ctx, cancel := context.WithTimeout(c.s.authCtx, c.s.cfg.HandshakeTimeout)
	defer cancel()
	p, err := c.s.cfg.Auth.AuthenticateFor(auth.WithSourceAddr(ctx, addrString(c.remote)), auth.AdapterAMQP, ten, name, pass)
	if err != nil {
		return fmt.Errorf("%w: %w", errAuth, err)
	}
	c.principal = p
	return nil
}

// external authenticates with the verified client certificate: its common
// name is the user; the tenant is the certificate's first organization if
// that names a tenant, else the authzid (the initial response), else the
// SASL hostname, else the default tenant. The user must exist in that
// tenant; the principal gets its roles and permissions.
//
// A device's certificate (issued by a tenant's trust anchor, not the
// node's client CA) authenticates the device instead: its tenant and
// auth-id come from the certificate (auth.AuthenticateCert), the authzid
// and hostname are not consulted.
func (h *handshake) external(authz []byte, hostname string) error {
	c := h.c
	tc, ok := c.nc.(*tls.Conn)
	if ok && !c.tlsVerified && c.deviceCert {
		ctx, cancel := context.WithTimeout(c.s.authCtx, c.s.cfg.HandshakeTimeout)
		defer cancel()
		cs := tc.ConnectionState()
		p, err := c.s.cfg.Auth.AuthenticateCert(ctx, auth.AdapterAMQP, &cs)
		if err != nil {
			return fmt.Errorf("%w: %w", errAuth, err)
		}
		c.principal = p
		return nil
	}
	if !ok || !c.tlsVerified {
		return fmt.Errorf("%w: no verified client certificate", errAuth)
	}
	cert := c.s.cfg.Auth.UserCert(new(tc.ConnectionState()))
	user := cert.Subject.CommonName
	ten := ""
	for _, o := range cert.Subject.Organization {
		if _, ok := c.s.cfg.Tenants.Tenant(o); ok {
			ten = o
			break
		}
	}
	if ten == "" && len(authz) > 0 {
		ten = string(authz)
	}
	if ten == "" {
		if t, ok := c.tenantFromHost(hostname); ok {
			ten = t
		} else {
			ten = tenant.Default
		}
	}
	if _, ok := c.s.cfg.Tenants.Tenant(ten); !ok {
		return fmt.Errorf("%w: unknown tenant %q", errAuth, ten)
	}
	us, ok := c.s.cfg.Tenants.(Users)
	if !ok {
		return fmt.Errorf("%w: no user store for EXTERNAL", errAuth)
	}
	u, ok := us.User(ten, user)
	if !ok {
		return fmt.Errorf("%w: unknown user %q in tenant %q", errAuth, user, ten)
	}
	c.principal = &auth.Principal{Tenant: ten, User: u.Name, Roles: u.Roles, Perms: u.Permissions}
	return nil
}

// checkClientCert classifies the client certificate of a TLS connection
// after its handshake: a user's (the node's client CA) or a device's (a
// tenant's trust anchor).
func (c *conn) checkClientCert(tc *tls.Conn) {
	cs := tc.ConnectionState()
	c.tlsVerified = c.s.cfg.Auth.UserCert(&cs) != nil
	c.deviceCert = !c.tlsVerified && c.s.cfg.Auth.HasDeviceCert(&cs)
}

// tenantFromHost maps a host name onto a tenant: the name itself, or its
// first DNS label ("acme.iot.example.com" → "acme"), if such a tenant
// exists. IP addresses never name a tenant.
func (c *conn) tenantFromHost(host string) (string, bool) {
	if host == "" {
		return "", false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	if net.ParseIP(host) != nil {
		return "", false
	}
	if _, ok := c.s.cfg.Tenants.Tenant(host); ok {
		return host, true
	}
	if label, _, ok := strings.Cut(host, "."); ok {
		if _, ok := c.s.cfg.Tenants.Tenant(label); ok {
			return label, true
		}
	}
	return "", false
}

// open reads the client's open and answers it (part 2.7.1). An error
// after our open is sent as a close.
func (h *handshake) open() error {
	c := h.c
	cfg := &c.s.cfg
	f, err := h.readFrame()
	if err != nil {
		return err
	}
	var p frames.Performative
	if f.Type == frames.TypeAMQP {
		p, _, err = h.dec.DecodeFrame(f)
	}
	o, ok := p.(*frames.Open)
	var refuse *ConnError
	switch {
	case err != nil:
		refuse = asConnError(err)
	case !ok:
		refuse = connErr(frames.CondIllegalState, "expected open")
	case o.MaxFrameSize < frames.MinMaxFrameSize:
		refuse = connErr(frames.CondInvalidField, "max-frame-size %d is below 512", o.MaxFrameSize)
	}
	ours := &frames.Open{
		ContainerID:         cfg.ContainerID,
		MaxFrameSize:        cfg.MaxFrameSize,
		ChannelMax:          cfg.ChannelMax,
		IdleTimeOut:         uint32(cfg.IdleTimeout / time.Millisecond),
		OfferedCapabilities: []encoding.Symbol{"ANONYMOUS-RELAY"},
		Properties:          encoding.Map{{Key: encoding.Symbol("product"), Value: "throng"}},
	}
	if refuse == nil {
		c.containerID = o.ContainerID
		c.maxFrameIn = cfg.MaxFrameSize
		c.maxFrameOut = min(o.MaxFrameSize, 1<<20) // our frames stay reasonable
		c.channelMax = cfg.ChannelMax
		c.peerChanMax = o.ChannelMax
		c.idleIn = cfg.IdleTimeout
		if o.IdleTimeOut > 0 {
			// Send something at half the peer's timeout (part 2.4.5),
			// no more often than every 100 ms.
			c.peerIdleHalf = max(time.Duration(o.IdleTimeOut)*time.Millisecond/2, 100*time.Millisecond)
		}
		refuse = c.selectTenant(o.Hostname)
		if refuse != nil {
			c.auditLogin(audit.LoginFailed, h, refuse)
		} else if release, err := c.s.cfg.Router.OpenConn(c.principal.Tenant); err != nil {
			// The tenant's maxConnections on this node (router/quota.go):
			// open, then close with the condition (part 2.4.1).
			refuse = connErr(frames.CondResourceLimitExceeded, "%v", err)
		} else {
			c.releaseConn = release // serve calls it when the connection ends
		}
	}
	h.out, _ = frames.AppendFrame(nil, frames.TypeAMQP, 0, ours, nil)
	if refuse != nil {
		c.s.m.errors.WithLabelValues("connection", string(refuse.Condition)).Inc()
		h.out, _ = frames.AppendFrame(h.out, frames.TypeAMQP, 0, &frames.Close{Error: refuse.amqp()}, nil)
		_ = h.write(h.out)
		return refuse
	}
	c.auditLogin(audit.Login, h, nil)
	h.rest = h.buf
	return nil
}

// auditLogin records a login or a refused one in the audit log.
func (c *conn) auditLogin(k audit.Kind, h *handshake, err error) {
	e := audit.Event{Kind: k, Protocol: audit.AMQP, Remote: addrString(c.remote), User: h.user,
		ClientID: c.containerID, Mechanism: h.mech}
	if p := c.principal; p != nil && k == audit.Login {
		e.Tenant, e.User, e.Device = p.Tenant, p.User+p.AuthID, p.Device
	}
	if err != nil {
		e.Reason, e.Detail = "bad_credentials", err.Error()
		if errors.Is(err, auth.ErrUnavailable) {
			e.Reason = "unavailable"
		}
	}
	c.s.cfg.Audit.Record(e)
}

// selectTenant lets the open hostname choose the tenant when the
// credentials did not name one (DESIGN.md 3): PLAIN users are
// authenticated again in that tenant.
func (c *conn) selectTenant(hostname string) *ConnError {
	defer func() { c.plainUser, c.plainPass = "", "" }()
	if c.principal != nil {
		return nil // named by the credentials, or anonymous (default tenant only)
	}
	t, ok := c.tenantFromHost(hostname)
	if !ok {
		t = tenant.Default
	}
	ctx, cancel := context.WithTimeout(c.s.authCtx, c.s.cfg.HandshakeTimeout)
	defer cancel()
	p, err := c.s.cfg.Auth.AuthenticateFor(auth.WithSourceAddr(ctx, addrString(c.remote)), auth.AdapterAMQP, t, c.plainUser, c.plainPass)
	if err != nil {
		c.log.Debug("sasl authentication failed", "mechanism", "PLAIN", "err", err)
		c.s.m.authFail.Inc()
		return connErr(frames.CondUnauthorizedAccess, "not authorized for tenant %q", t)
	}
	c.principal = p
	return nil
}

// prefixConn reads pre before the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

// NetConn returns the connection read after pre (guard.HandshakeDone
// finds the accepted connection through it).
func (p *prefixConn) NetConn() net.Conn { return p.Conn }

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
