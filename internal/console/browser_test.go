package console_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/tenant"
	"github.com/throngmq/throng/internal/testkit"
)

// The console in a real browser: Debian's chromium (headless) driven by
// chromedp, against a whole platform (testkit), with a real MQTT client
// (paho.golang) publishing. Without chromium the tests skip, and fail
// when CI=true (make test installs it: TEST_APT_PACKAGES).

// needChromium finds the browser.
func needChromium(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found (apt-get install -y --no-install-recommends chromium)")
	}
	t.Skip("chromium not found")
	return ""
}

// browser starts a headless chromium for the test; each tab it opens
// with newTab has its own cookies (a browser context of its own).
func browser(t *testing.T) context.Context {
	t.Helper()
	path := needChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	bctx, cancel2 := chromedp.NewContext(alloc)
	t.Cleanup(cancel2)
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// tab is one browser user.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func newTab(t *testing.T, bctx context.Context, base string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// The tab is made by the first action, on this context (not on a
	// timeout's, which would close it when it ends).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	return &tab{t: t, ctx: ctx, base: base}
}

func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v (at %s)", what, err, b.location())
	}
}

func (b *tab) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path))
}

func (b *tab) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	l, _ := chromedp.Run(ctx, chromedp.Location())
	return l
}

// text is the text of the first element sel matches, "" if none.
func (b *tab) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(
		`(function(){var e=document.querySelector(%s);return e?e.textContent.trim():""})()`, strconv.Quote(sel))))
	if err != nil {
		b.t.Fatalf("text %s: %v", sel, err)
	}
	return s
}

// waitText polls (the pages refresh themselves) until sel's text
// satisfies ok.
func (b *tab) waitText(sel string, within time.Duration, ok func(string) bool) string {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := b.text(sel)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: text %q not as expected within %v (at %s)", sel, s, within, b.location())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *tab) login(user, password string) {
	b.t.Helper()
	b.open("/")
	// Redirected to the login form; typed as a user would, Enter submits.
	b.do("log in",
		chromedp.WaitVisible(chromedp.CSS("#user")),
		chromedp.SendKeys(chromedp.CSS("#user"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password+"\r"),
		chromedp.WaitVisible(chromedp.CSS("#logout")),
	)
}

func (b *tab) logout() {
	b.t.Helper()
	b.do("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#user")))
}

// platform starts throng with tenants acme and other, an application
// user of acme that may publish, a tenant administrator of acme and an
// operator of other. The users are stored with a bcrypt hash of the
// lowest cost: the API's hashing (bcrypt and SCRAM at full cost) takes
// seconds per user under the race detector, and is tested in admin.
func platform(t *testing.T) *testkit.Platform {
	t.Helper()
	p := testkit.Start(t)
	for _, name := range []string{"acme", "other"} {
		resp := p.Do(t, "POST", "/api/tenants", strings.NewReader(`{"name":"`+name+`"}`))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("tenant %s: %s", name, resp.Status)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range []struct {
		tenant, name, password string
		role                   tenant.Role
		perms                  []tenant.Permission
	}{
		{"acme", "app", "app-secret", tenant.RoleApp, []tenant.Permission{{Pattern: "#", Actions: []tenant.Action{tenant.ActionSend, tenant.ActionReceive}}}},
		{"acme", "ops", "ops-secret", tenant.RoleTenantAdmin, nil},
		{"other", "op", "op-secret", tenant.RoleOperator, nil},
	} {
		hash, err := bcrypt.GenerateFromPassword([]byte(u.password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		user := &tenant.User{Name: u.name, Tenant: u.tenant, PasswordHash: string(hash),
			Roles: []tenant.Role{u.role}, Permissions: u.perms, Created: time.Now()}
		if err := p.Store.PutUser(ctx, user, true); err != nil {
			t.Fatalf("user %s@%s: %v", u.name, u.tenant, err)
		}
	}
	return p
}

// pub is an MQTT 5 client (paho.golang) publishing QoS 1 messages as
// app@acme until stopped or disconnected.
type pub struct {
	t    *testing.T
	c    *paho.Client
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	n    int   // messages acknowledged
	err  error // why publishing stopped, if it did by itself
	// disconnect is the reason code of the server's DISCONNECT.
	disconnect chan byte
	once       sync.Once
}

func publisher(t *testing.T, p *testkit.Platform, topic string) *pub {
	t.Helper()
	nc, err := net.DialTimeout("tcp", p.MQTTAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pb := &pub{t: t, done: make(chan struct{}), disconnect: make(chan byte, 1)}
	pb.c = paho.NewClient(paho.ClientConfig{ClientID: "console-pub", Conn: nc,
		OnServerDisconnect: func(d *paho.Disconnect) { pb.disconnect <- d.ReasonCode },
		OnClientError:      func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := pb.c.Connect(ctx, &paho.Connect{ClientID: "console-pub", CleanStart: true, KeepAlive: 30,
		Username: "app@acme", UsernameFlag: true, Password: []byte("app-secret"), PasswordFlag: true})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("mqtt connect: %v %+v", err, ack)
	}
	pb.wg.Add(1)
	go func() {
		defer pb.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-pb.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := pb.c.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprintf("reading %d", i))})
			pcancel()
			pb.mu.Lock()
			if err != nil {
				pb.err = err
				pb.mu.Unlock()
				return
			}
			pb.n++
			pb.mu.Unlock()
		}
	}()
	t.Cleanup(func() { pb.stop() })
	return pb
}

// pause ends publishing, keeping the connection, and returns the number
// of messages acknowledged.
func (pb *pub) pause() int {
	pb.once.Do(func() {
		close(pb.done)
		pb.wg.Wait()
	})
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.err != nil {
		pb.t.Errorf("publishing failed: %v", pb.err)
		pb.err = nil
	}
	return pb.n
}

// stop pauses and disconnects.
func (pb *pub) stop() {
	pb.pause()
	_ = pb.c.Disconnect(&paho.Disconnect{})
}

func num(s string) int {
	f := strings.Fields(s)
	if len(f) == 0 {
		return -1
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return -1
	}
	return n
}

// TestConsoleBrowser: the platform administrator logs in, creates a
// queue in the form, sees an MQTT client's messages move its rate and
// backlog (on the address, the list and the dashboard), and logs out; a
// tenant operator of another tenant sees only its own.
func TestConsoleBrowser(t *testing.T) {
	p := platform(t)
	bctx := browser(t)
	admin := newTab(t, bctx, p.AdminURL)

	admin.login(p.AdminUser, p.AdminPassword)
	if got := admin.text(".user"); got != "admin@default" {
		t.Errorf("logged in as %q", got)
	}
	// The session cookie is HttpOnly: scripts do not see it.
	if c := admin.evalString(`document.cookie`); strings.Contains(c, "throng_session") {
		t.Errorf("document.cookie shows the session: %q", c)
	}

	// Create a queue with the form (the type explained next to each).
	admin.open("/t/acme/addresses/new")
	admin.do("create address",
		chromedp.WaitVisible(chromedp.CSS("#addr-name")),
		chromedp.SendKeys(chromedp.CSS("#addr-name"), "orders/eu"),
		chromedp.Click(chromedp.CSS("#type-queue")),
		chromedp.Click(chromedp.CSS("#create-address")),
		chromedp.WaitVisible(chromedp.CSS("#addr-backlog")),
	)
	if f := admin.text(".flash"); !strings.Contains(f, "orders/eu (queue) created") {
		t.Errorf("flash %q", f)
	}
	if loc := admin.location(); !strings.HasSuffix(loc, "/t/acme/address/orders/eu") {
		t.Errorf("after create at %s", loc)
	}
	// The page's test message form publishes one (stored: backlog 1).
	admin.do("publish a test message", chromedp.Click(chromedp.CSS("#publish")))
	if f := admin.waitText(".flash", 10*time.Second, func(s string) bool { return strings.HasPrefix(s, "Test message") }); f != "Test message published: stored." {
		t.Errorf("publish flash %q", f)
	}
	admin.waitText("#addr-backlog", 10*time.Second, func(s string) bool { return num(s) == 1 })
	// A mistake is explained on the form, filled in again.
	admin.open("/t/acme/addresses/new")
	admin.do("create a duplicate",
		chromedp.WaitVisible(chromedp.CSS("#addr-name")),
		chromedp.SendKeys(chromedp.CSS("#addr-name"), "orders/eu"),
		chromedp.Click(chromedp.CSS("#create-address")),
		chromedp.WaitVisible(chromedp.CSS("#form-error")),
	)
	if e := admin.text("#form-error"); !strings.Contains(e, "already exists") {
		t.Errorf("duplicate: %q", e)
	}

	// A real MQTT client publishes; the address page (refreshed by htmx)
	// shows the backlog grow and a rate in.
	pb := publisher(t, p, "orders/eu")
	admin.open("/t/acme/address/orders/eu")
	admin.waitText("#addr-backlog", 30*time.Second, func(s string) bool { return num(s) >= 5 })
	admin.waitText("#addr-in", 30*time.Second, func(s string) bool {
		// "N (R/s, …)": a rate above zero
		i := strings.Index(s, "(")
		return i > 0 && !strings.HasPrefix(s[i+1:], "0/s")
	})
	// The list shows it too, and the dashboard's figures and chart.
	admin.open("/t/acme/addresses")
	admin.waitText(`tr[data-address="orders/eu"] .backlog`, 20*time.Second, func(s string) bool { return num(s) >= 5 })
	admin.waitText(`tr[data-address="orders/eu"] .rate-in`, 20*time.Second, func(s string) bool { return s != "" && s != "0" })
	admin.open("/")
	admin.waitText("#dash-backlog", 20*time.Second, func(s string) bool { return num(s) >= 5 })
	admin.waitText("#dash-in", 20*time.Second, func(s string) bool { return s != "0" && s != "" })
	admin.do("chart", chromedp.WaitVisible(chromedp.CSS("#chart .u-over")))
	sent := pb.pause()

	// The connection is in the list; closing it from its page disconnects
	// the client with MQTT 5's reason 0x98 (administrative action).
	admin.open("/connections")
	admin.waitText(`tr[data-client="console-pub"]`, 20*time.Second, func(s string) bool { return strings.Contains(s, "app") && strings.Contains(s, "mqtt5") })
	admin.do("connection page", chromedp.Click(chromedp.CSS(`tr[data-client="console-pub"] a`)), chromedp.WaitVisible(chromedp.CSS("#close-conn")))
	if d := admin.text("#conn-detail"); !strings.Contains(d, "console-pub") {
		t.Errorf("connection detail: %q", d)
	}
	admin.confirmAll()
	admin.do("close connection", chromedp.Click(chromedp.CSS("#close-conn")))
	admin.waitText(".flash", 10*time.Second, func(s string) bool { return strings.Contains(s, "closed") })
	select {
	case rc := <-pb.disconnect:
		if rc != 0x98 {
			t.Errorf("DISCONNECT reason %#x, want 0x98", rc)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the client was not disconnected")
	}
	admin.open("/")
	admin.waitText("#dash-backlog", 20*time.Second, func(s string) bool { return num(s) == sent+1 })
	admin.waitText("#dash-in", 20*time.Second, func(s string) bool { return s == "0" })

	// Peek shows the first messages (the console's test message first),
	// purge removes them all.
	admin.open("/t/acme/address/orders/eu?peek=1&limit=3")
	admin.do("peek", chromedp.WaitVisible(chromedp.CSS("#peeked")))
	if rows := admin.evalString(`String(document.querySelectorAll("#peeked tbody tr").length)`); rows != "3" {
		t.Errorf("peeked %s rows", rows)
	}
	if b := admin.text("#peeked tbody tr .body"); !strings.Contains(b, "from the console") {
		t.Errorf("first peeked body %q", b)
	}
	admin.confirmAll()
	admin.do("purge", chromedp.Click(chromedp.CSS("#purge")))
	admin.waitText(".flash", 10*time.Second, func(s string) bool { return strings.Contains(s, "purged") })
	if f, want := admin.text(".flash"), fmt.Sprintf("purged: %d messages removed", sent+1); !strings.Contains(f, want) {
		t.Errorf("purge flash %q, want %q", f, want)
	}
	admin.waitText("#addr-backlog", 10*time.Second, func(s string) bool { return num(s) == 0 })

	// Deep links and back: the browser's history works as for any site.
	admin.open("/t/acme/users")
	admin.evalString(`history.back(); ""`)
	admin.waitText("#addr-backlog", 10*time.Second, func(s string) bool { return s != "" })

	admin.open("/")
	admin.logout()
	admin.open("/t/acme/addresses")
	if loc := admin.location(); !strings.Contains(loc, "/login?next=") {
		t.Errorf("after logout /t/acme/addresses is %s", loc)
	}

	// The operator of tenant other sees its tenant only.
	op := newTab(t, bctx, p.AdminURL)
	op.login("op@other", "op-secret")
	op.open("/tenants")
	if got := op.text("#tenants tbody"); !strings.Contains(got, "other") || strings.Contains(got, "acme") {
		t.Errorf("operator's tenants: %q", got)
	}
	op.open("/t/acme/addresses")
	if e := op.text("#page-error"); !strings.Contains(e, `may only administer tenant "other"`) {
		t.Errorf("operator on acme: %q", e)
	}
	if strings.Contains(op.text("main"), "orders/eu") {
		t.Error("operator sees acme's address")
	}
	// Read-only: no create form, and a forged POST is refused by the API.
	op.open("/t/other/addresses")
	if n := op.evalString(`String(document.querySelectorAll("#new-address").length)`); n != "0" {
		t.Errorf("operator sees the new-address button")
	}
	csrf := op.evalString(`document.body.dataset.csrf`)
	status := op.evalString(fmt.Sprintf(`fetch("/t/other/addresses",{method:"POST",headers:{"Content-Type":"application/x-www-form-urlencoded"},body:"csrf=%s&name=x&type=queue"}).then(function(r){return String(r.status)})`, url.QueryEscape(csrf)))
	if status != "403" {
		t.Errorf("operator's create: %s, want 403", status)
	}
	status = op.evalString(fmt.Sprintf(`fetch("/t/other/address/x",{method:"POST",headers:{"Content-Type":"application/x-www-form-urlencoded"},body:"csrf=%s&action=publish&body=x"}).then(function(r){return String(r.status)})`, url.QueryEscape(csrf)))
	if status != "403" {
		t.Errorf("operator's test publish: %s, want 403", status)
	}
}

// confirmAll answers the page's confirmation dialogs with OK.
func (b *tab) confirmAll() {
	b.t.Helper()
	b.evalString(`window.confirm = function () { return true; }; ""`)
}

func (b *tab) evalString(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	return s
}

// TestConsoleScreenshots writes a screenshot of every view to the
// directory THRONG_SCREENSHOTS names (make screenshots: docs/console).
func TestConsoleScreenshots(t *testing.T) {
	dir := os.Getenv("THRONG_SCREENSHOTS")
	if dir == "" {
		t.Skip("THRONG_SCREENSHOTS not set")
	}
	p := platform(t)
	for _, req := range []struct{ path, body string }{
		{"/api/tenants/acme/addresses", `{"name":"telemetry","type":"topic"}`},
		{"/api/tenants/acme/addresses", `{"name":"dlq","type":"queue"}`},
		{"/api/tenants/acme/addresses", `{"name":"orders/eu","type":"queue","deadLetter":"dlq"}`},
		{"/api/tenants/acme/addresses", `{"name":"alerts","type":"multicast"}`},
		{"/v1/devices/acme/sensor-1", `{}`},
		{"/v1/devices/acme/sensor-2", `{"enabled":false}`},
	} {
		resp := p.Do(t, "POST", req.path, strings.NewReader(req.body))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %s", req.path, resp.Status)
		}
	}
	publisher(t, p, "orders/eu")
	bctx := browser(t)
	b := newTab(t, bctx, p.AdminURL)
	shot := func(name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG (below: JPEG)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.open("/login")
	b.do("login page", chromedp.WaitVisible(chromedp.CSS("#user")))
	shot("login")
	b.login(p.AdminUser, p.AdminPassword)
	b.open("/")
	b.waitText("#dash-in", 30*time.Second, func(s string) bool { return s != "0" && s != "" })
	time.Sleep(8 * time.Second) // a few chart points
	shot("dashboard")
	for _, v := range []struct{ name, path, wait string }{
		{"tenants", "/tenants", "#tenants"},
		{"tenant", "/t/acme", "#usage"},
		{"addresses", "/t/acme/addresses", "#addresses"},
		{"address-new", "/t/acme/addresses/new", "#address-form"},
		{"address", "/t/acme/address/orders/eu?peek=1&limit=3", "#addr-backlog"},
		{"connections", "/connections", "main h1"},
		{"anomalies", "/anomalies?tenant=acme", "#findings"},
		{"users", "/t/acme/users", "#users"},
		{"devices", "/t/acme/devices", "#devices"},
		{"device", "/t/acme/device/sensor-1", "#credentials"},
	} {
		b.open(v.path)
		b.do(v.name, chromedp.WaitVisible(chromedp.CSS(v.wait)))
		time.Sleep(300 * time.Millisecond)
		shot(v.name)
	}
	b.do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)), chromedp.Navigate(p.AdminURL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#dash-in")))
	time.Sleep(3 * time.Second)
	shot("dashboard-phone")
}
