package admin_test

import (
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/testkit"
)

// TestAddressReferences (issue 14 item 12): an address naming another one
// (its dead-letter address, a subscription's topic) is refused with a
// clear 400 when that one does not exist or cannot serve, and a topic is
// named by subscriptions only.
func TestAddressReferences(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	c.must(201, "POST", "/api/tenants", `{"name":"acme","autoCreate":[{"pattern":"dl/#","type":"queue"}]}`)
	base := "/api/tenants/acme/addresses"
	c.must(201, "POST", base, `{"name":"dlq","type":"queue"}`)
	c.must(201, "POST", base, `{"name":"any","type":"anycast"}`)
	c.must(201, "POST", base, `{"name":"metrics","type":"topic"}`)
	c.must(201, "POST", base, `{"name":"q1","type":"queue"}`)

	for _, tc := range []struct{ body, want string }{
		{`{"name":"orders","type":"queue","deadLetter":"nowhere"}`, `dead-letter address "nowhere" does not exist`},
		{`{"name":"orders","type":"queue","deadLetter":"any"}`, `is anycast`},
		{`{"name":"orders","type":"queue","deadLetter":"orders"}`, `its own dead-letter address`},
		{`{"name":"orders","type":"queue","topic":"metrics"}`, `only a subscription address names a topic, not a queue`},
		{`{"name":"m2","type":"topic","topic":"metrics"}`, `only a subscription address names a topic`},
		{`{"name":"sub","type":"subscription","topic":"nope"}`, `topic "nope" does not exist`},
		{`{"name":"sub","type":"subscription","topic":"q1"}`, `"q1" is a queue, not a topic`},
	} {
		r := c.do("POST", base, tc.body)
		var e admin.ErrorBody
		r.decode(t, &e)
		if r.status != 400 || e.Error.Code != admin.CodeInvalid || !strings.Contains(e.Error.Message, tc.want) {
			t.Errorf("%s: %d %s, want 400 invalid %q", tc.body, r.status, r.body, tc.want)
		}
	}
	c.fails(404, admin.CodeNotFound, "GET", base+"/orders", nil)
	c.fails(404, admin.CodeNotFound, "GET", base+"/sub", nil)

	// What exists, or an auto-create rule will create, is fine.
	c.must(201, "POST", base, `{"name":"orders","type":"queue","deadLetter":"dlq"}`)
	c.must(201, "POST", base, `{"name":"jobs","type":"queue","deadLetter":"dl/jobs"}`)
	c.must(201, "POST", base, `{"name":"billing","type":"subscription","topic":"metrics"}`)
}
