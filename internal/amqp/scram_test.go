package amqp

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	goamqp "github.com/Azure/go-amqp"
	"github.com/xdg-go/stringprep"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// go-amqp has no SCRAM mechanism (v1.7: PLAIN, ANONYMOUS, EXTERNAL,
// XOAUTH2), and Debian's Proton is built without Cyrus SASL
// (proton.SASL.extended() is false), so the client side is scripted here
// over raw SASL frames.

// scramClient is the client side of SCRAM-SHA-256 (RFC 5802). It prepares
// the password with SASLprep (RFC 4013), as the RFC requires, and sends
// the user name as given: preparing it is only a SHOULD for clients, and
// the server's preparation is what is under test.
type scramClient struct {
	user, pw, authzid, cnonce string

	gs2, bare, authMsg string
	salted             []byte
}

func (c *scramClient) first() []byte {
	esc := strings.NewReplacer("=", "=3D", ",", "=2C")
	c.gs2 = "n,,"
	if c.authzid != "" {
		c.gs2 = "n,a=" + esc.Replace(c.authzid) + ","
	}
	c.bare = "n=" + esc.Replace(c.user) + ",r=" + c.cnonce
	return []byte(c.gs2 + c.bare)
}

func (c *scramClient) final(t testing.TB, serverFirst []byte) []byte {
	t.Helper()
	var nonce string
	var salt []byte
	iter := 0
	for _, a := range strings.Split(string(serverFirst), ",") {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "r":
			nonce = v
		case "s":
			salt, _ = base64.StdEncoding.DecodeString(a[2:])
		case "i":
			iter, _ = strconv.Atoi(v)
		}
	}
	if !strings.HasPrefix(nonce, c.cnonce) || len(nonce) == len(c.cnonce) || len(salt) == 0 || iter < 4096 {
		t.Fatalf("bad server-first %q", serverFirst)
	}
	// SaltedPassword := Hi(Normalize(password), salt, i), Normalize being
	// SASLprep (RFC 5802 section 3).
	pw, err := stringprep.SASLprep.Prepare(c.pw)
	if err != nil {
		t.Fatalf("client SASLprep: %v", err)
	}
	if c.salted, err = pbkdf2.Key(sha256.New, pw, salt, iter, sha256.Size); err != nil {
		t.Fatal(err)
	}
	without := "c=" + base64.StdEncoding.EncodeToString([]byte(c.gs2)) + ",r=" + nonce
	c.authMsg = c.bare + "," + string(serverFirst) + "," + without
	key := mac(c.salted, "Client Key")
	stored := sha256.Sum256(key)
	sig := mac(stored[:], c.authMsg)
	for i := range key {
		key[i] ^= sig[i]
	}
	return []byte(without + ",p=" + base64.StdEncoding.EncodeToString(key))
}

func (c *scramClient) verify(serverFinal []byte) bool {
	want := "v=" + base64.StdEncoding.EncodeToString(mac(mac(c.salted, "Server Key"), c.authMsg))
	return hmac.Equal([]byte(want), serverFinal)
}

func mac(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// logBuffer collects the server's log lines (written by connection
// goroutines).
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (p *rawPeer) sendSASL(perf frames.Performative) {
	p.t.Helper()
	b, err := frames.AppendFrame(nil, frames.TypeSASL, 0, perf, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(b)
}

// scramLogin runs the SASL layer with SCRAM-SHA-256 and returns the
// outcome. With emptyInit the sasl-init carries no initial response, and
// the server must ask with an empty challenge. A successful outcome's
// server signature is checked.
func scramLogin(t *testing.T, e *testEnv, c *scramClient, hostname string, emptyInit bool) (*rawPeer, *frames.SASLOutcome) {
	t.Helper()
	p := dialRawHeader(t, e)
	p.write(frames.HeaderSASL.Append(nil))
	if h := p.readHeader(); h != frames.HeaderSASL {
		t.Fatalf("header %+v", h)
	}
	mechs := expect[*frames.SASLMechanisms](p)
	if !slices.Contains(mechs.Mechanisms, encoding.Symbol("SCRAM-SHA-256")) {
		t.Fatalf("SCRAM-SHA-256 not offered: %v", mechs.Mechanisms)
	}
	if emptyInit {
		p.sendSASL(&frames.SASLInit{Mechanism: "SCRAM-SHA-256", Hostname: hostname})
		if ch := expect[*frames.SASLChallenge](p); len(ch.Challenge) != 0 {
			t.Fatalf("first challenge %q, want empty", ch.Challenge)
		}
		p.sendSASL(&frames.SASLResponse{Response: c.first()})
	} else {
		p.sendSASL(&frames.SASLInit{Mechanism: "SCRAM-SHA-256", InitialResponse: c.first(), Hostname: hostname})
	}
	perf := p.next()
	if o, ok := perf.(*frames.SASLOutcome); ok {
		return p, o // refused at client-first
	}
	ch, ok := perf.(*frames.SASLChallenge)
	if !ok {
		t.Fatalf("got %T, want sasl-challenge", perf)
	}
	p.sendSASL(&frames.SASLResponse{Response: c.final(t, ch.Challenge)})
	o := expect[*frames.SASLOutcome](p)
	if o.Code == frames.SASLOk && !c.verify(o.AdditionalData) {
		t.Fatalf("server signature %q does not verify", o.AdditionalData)
	}
	return p, o
}

// openAndSend finishes the connection after SASL and sends one message to
// addr, which must be accepted.
func (p *rawPeer) openAndSend(addr, body string) {
	p.t.Helper()
	p.write(frames.HeaderAMQP.Append(nil))
	if h := p.readHeader(); h != frames.HeaderAMQP {
		p.t.Fatalf("header %+v", h)
	}
	p.send(0, &frames.Open{ContainerID: "scram", MaxFrameSize: 65536, ChannelMax: 10})
	expect[*frames.Open](p)
	p.openSession()
	p.attachSender(0, addr)
	p.expectFlow()
	p.transfer(0, 0, false, minimalMessage(body))
	if d := p.expectDisposition(); !isAccepted(d.State) {
		p.t.Fatalf("disposition %+v", d)
	}
}

func TestSASLScram(t *testing.T) {
	logs := &logBuffer{}
	e := startEnv(t, func(c *Config) {
		c.AllowAnonymous = false
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	e.tenant(t, &tenant.Tenant{Name: "acme"})
	e.addrDef(t, "acme", &address.Address{Name: "q", Type: address.Queue})
	e.user(t, "acme", "alice", "pencil")
	// A user stored before SCRAM support: a bcrypt hash, no verifier.
	h, err := auth.HashPassword("old")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutUser(ctxT(t), &tenant.User{Name: "legacy", Tenant: "acme", PasswordHash: h, Roles: []tenant.Role{tenant.RoleTenantAdmin}}, true); err != nil {
		t.Fatal(err)
	}

	ok := []struct {
		name     string
		c        scramClient
		hostname string
		empty    bool
	}{
		{"user@tenant", scramClient{user: "alice@acme", pw: "pencil"}, "", false},
		{"authzid names the tenant", scramClient{user: "alice", authzid: "acme", pw: "pencil"}, "", false},
		{"sasl hostname names the tenant", scramClient{user: "alice", pw: "pencil"}, "acme.iot.example.com", false},
		{"empty initial response", scramClient{user: "alice@acme", pw: "pencil"}, "", true},
	}
	for i, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.cnonce = "fyko+d2lbbFgONRv9qkxdawL" + strconv.Itoa(i)
			p, o := scramLogin(t, e, &tc.c, tc.hostname, tc.empty)
			if o.Code != frames.SASLOk {
				t.Fatalf("outcome %d", o.Code)
			}
			p.openAndSend("q", "m"+strconv.Itoa(i))
		})
	}
	eventually(t, func() bool {
		st, _ := e.r.AddressStats(ctxT(t), "acme", "q")
		return st.Backlog == int64(len(ok))
	})

	for _, tc := range []struct {
		name string
		c    scramClient
	}{
		{"wrong password", scramClient{user: "alice@acme", pw: "wrong"}},
		{"unknown user", scramClient{user: "nobody@acme", pw: "pencil"}},
		{"unknown tenant", scramClient{user: "alice@nope", pw: "pencil"}},
		{"no tenant: default", scramClient{user: "alice", pw: "pencil"}},
		{"user without verifier", scramClient{user: "legacy@acme", pw: "old"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.cnonce = "abc"
			p, o := scramLogin(t, e, &tc.c, "", false)
			if o.Code != frames.SASLAuth || len(o.AdditionalData) != 0 {
				t.Fatalf("outcome %+v", o)
			}
			p.expectEOF()
		})
	}

	// Malformed client-first: refused at once.
	p := dialRawHeader(t, e)
	p.write(frames.HeaderSASL.Append(nil))
	p.readHeader()
	expect[*frames.SASLMechanisms](p)
	p.sendSASL(&frames.SASLInit{Mechanism: "SCRAM-SHA-256", InitialResponse: []byte("p=tls-unique,,n=alice@acme,r=x")})
	if o := expect[*frames.SASLOutcome](p); o.Code != frames.SASLAuth {
		t.Fatalf("malformed: outcome %d", o.Code)
	}
	p.expectEOF()

	// The legacy user's failure says why, in the server log.
	if l := logs.String(); !strings.Contains(l, "scram-sha-256 refused") || !strings.Contains(l, `user \"legacy\" of tenant \"acme\"`) {
		t.Fatalf("no log line for the user without verifier:\n%s", l)
	}
	// The legacy user still gets in with PLAIN.
	s := e.session(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("legacy@acme", "old")})
	send(t, sender(t, s, "q", nil), dataMsg("plain"))
}

func TestSASLScramSASLprep(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.AllowAnonymous = false })
	e.tenant(t, &tenant.Tenant{Name: "acme"})
	e.addrDef(t, "acme", &address.Address{Name: "q", Type: address.Queue})
	// Set with a no-break space and a soft hyphen; SASLprep makes it
	// "pass word", and the verifier is of that.
	const pw = "pass\u00A0wo\u00ADrd"
	e.user(t, "acme", "carol", pw)

	ok := []struct {
		name string
		c    scramClient
	}{
		{"as set", scramClient{user: "carol@acme", pw: pw}},
		{"ASCII space, no soft hyphen", scramClient{user: "carol@acme", pw: "pass word"}},
		{"en space", scramClient{user: "carol@acme", pw: "pass\u2002word"}},
		{"fullwidth user name", scramClient{user: "\uFF43\uFF41\uFF52\uFF4F\uFF4C\uFF20acme", pw: "pass word"}},
	}
	for i, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.cnonce = "prep" + strconv.Itoa(i)
			p, o := scramLogin(t, e, &tc.c, "", false)
			if o.Code != frames.SASLOk {
				t.Fatalf("outcome %d", o.Code)
			}
			p.openAndSend("q", "m"+strconv.Itoa(i))
		})
	}
	eventually(t, func() bool {
		st, _ := e.r.AddressStats(ctxT(t), "acme", "q")
		return st.Backlog == int64(len(ok))
	})

	// Not equivalent, or a user name SASLprep refuses: the usual auth
	// outcome, without data, and the socket closed.
	for _, tc := range []struct {
		name string
		c    scramClient
	}{
		{"space removed", scramClient{user: "carol@acme", pw: "password"}},
		{"user name with a control character", scramClient{user: "car\u0007ol@acme", pw: "pass word"}},
		{"user name mixing directions", scramClient{user: "\u0627carol@acme", pw: "pass word"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.cnonce = "abc"
			p, o := scramLogin(t, e, &tc.c, "", false)
			if o.Code != frames.SASLAuth || len(o.AdditionalData) != 0 {
				t.Fatalf("outcome %+v", o)
			}
			p.expectEOF()
		})
	}

	// PLAIN compares the bcrypt hash of the password as given: the exact
	// password works, an equivalent spelling does not (docs/amqp.md).
	s := e.session(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("carol@acme", pw)})
	send(t, sender(t, s, "q", nil), dataMsg("plain"))
	if c, err := goamqp.Dial(ctxT(t), e.url(), &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("carol@acme", "pass word")}); err == nil {
		c.Close()
		t.Fatal("PLAIN accepted an equivalent, not identical, password")
	}
}
