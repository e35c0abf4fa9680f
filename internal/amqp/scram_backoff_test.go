package amqp

import (
	"strconv"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// SCRAM-SHA-256 failures count in the login backoff (issue 14): after the
// user's free failures, a wrong proof is answered late, and a PLAIN
// login of the same user with a wrong password too.
func TestSASLScramBackoff(t *testing.T) {
	const first = 400 * time.Millisecond
	e := startEnv(t, func(c *Config) {
		c.AllowAnonymous = false
		c.Auth = auth.New(c.Tenants.(*tenant.Store), auth.WithLoginBackoff(auth.Backoff{First: first, Max: first}))
	})
	e.tenant(t, &tenant.Tenant{Name: "acme"})
	e.user(t, "acme", "alice", "pencil")
	for i := range 4 {
		c := scramClient{user: "alice@acme", pw: "wrong", cnonce: "n" + strconv.Itoa(i)}
		t0 := time.Now()
		p, o := scramLogin(t, e, &c, "", false)
		d := time.Since(t0)
		if o.Code != frames.SASLAuth {
			t.Fatalf("guess %d: outcome %d", i+1, o.Code)
		}
		p.expectEOF()
		if (i < 3 && d > first*9/10) || (i == 3 && d < first) {
			t.Fatalf("SCRAM guess %d answered after %v (first delay %v after 3 free failures)", i+1, d, first)
		}
	}
	// The right password still gets in (its turn comes after the delay).
	c := scramClient{user: "alice@acme", pw: "pencil", cnonce: "ok"}
	if _, o := scramLogin(t, e, &c, "", false); o.Code != frames.SASLOk {
		t.Fatalf("right password: outcome %d", o.Code)
	}
}
