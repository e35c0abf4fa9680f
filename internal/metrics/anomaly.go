package metrics

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/history"
)

// The anomaly finder (issue 15, docs/anomalies.md): the clients and
// addresses that behave unlike the rest, each with its evidence.
//
//   - top talkers: connections by message rate, with their share of the
//     tenant's (a finding when one takes more than TopShare);
//   - growing backlogs: queue and topic addresses whose backlog grew by
//     BacklogGrowth or more over the last BacklogPoints history points
//     (nobody consumes, or the consumers do not keep up), and
//     dead-letter addresses that grow;
//   - error makers: client ids that connect again and again
//     (ReconnectLoop connects within a Window), sources that fail to
//     log in (AuthFailures), principals refused actions (Denied).
//
// The error makers are counted incrementally in space-saving sketches
// (Metwally et al.) of SketchSize entries per kind and window: memory is
// bounded whatever the number of devices, and a count is never
// under-estimated; findings use the guaranteed part (count − error).

// SketchSize is the number of keys each sketch keeps.
const SketchSize = 1024

// Thresholds tune the finder; zero fields take the defaults
// (DefaultThresholds).
type Thresholds struct {
	Window        time.Duration `json:"window"` // nanoseconds in JSON; the sketches' window
	ReconnectLoop int           `json:"reconnectLoop"`
	AuthFailures  int           `json:"authFailures"`
	Denied        int           `json:"denied"`
	TopShare      float64       `json:"topShare"`
	TopMinRate    float64       `json:"topMinRate"` // messages per second
	TopN          int           `json:"topN"`
	BacklogPoints int           `json:"backlogPoints"` // history points (5 s each)
	BacklogGrowth int64         `json:"backlogGrowth"`
	// A device is silent when not seen for SilentFactor times its usual
	// interval, and at least SilentMinSeconds (silent.go).
	SilentFactor     float64 `json:"silentFactor"`
	SilentMinSeconds float64 `json:"silentMinSeconds"`
}

// DefaultThresholds are the finder's defaults.
var DefaultThresholds = Thresholds{
	Window:           time.Minute,
	ReconnectLoop:    5,
	AuthFailures:     5,
	Denied:           10,
	TopShare:         0.5,
	TopMinRate:       1,
	TopN:             5,
	BacklogPoints:    6,
	BacklogGrowth:    20,
	SilentFactor:     3,
	SilentMinSeconds: 60,
}

// Merge returns t with its zero (or negative) fields taken from d.
func (t Thresholds) Merge(d Thresholds) Thresholds {
	orDefault(&t.Window, d.Window)
	orDefault(&t.ReconnectLoop, d.ReconnectLoop)
	orDefault(&t.AuthFailures, d.AuthFailures)
	orDefault(&t.Denied, d.Denied)
	orDefault(&t.TopShare, d.TopShare)
	orDefault(&t.TopMinRate, d.TopMinRate)
	orDefault(&t.TopN, d.TopN)
	orDefault(&t.BacklogPoints, d.BacklogPoints)
	orDefault(&t.BacklogGrowth, d.BacklogGrowth)
	orDefault(&t.SilentFactor, d.SilentFactor)
	orDefault(&t.SilentMinSeconds, d.SilentMinSeconds)
	return t
}

// orDefault sets *v to d unless it is positive.
func orDefault[T int | int64 | float64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// AddressLister calls yield with every defined address of every tenant.
type AddressLister func(yield func(tenant string, a *address.Address))

// Finding kinds.
const (
	KindTopTalker      = "top_talker"
	KindBacklog        = "backlog_growing"
	KindDeadLetter     = "dead_letter_growing"
	KindReconnectLoop  = "reconnect_loop"
	KindAuthFailures   = "auth_failures"
	KindDenied         = "denied"
	KindSilent         = "silent_device"
	kindSketchReconn   = 0
	kindSketchAuth     = 1
	kindSketchDenied   = 2
	kindSketchCount    = 3
	evidenceMaxDetails = 200
)

// Finding is one anomaly with its evidence.
type Finding struct {
	Kind    string `json:"kind"`
	Tenant  string `json:"tenant"`
	Summary string `json:"summary"`
	// Exactly the fields that apply are set: the address, the connection
	// (a live one, for a link to it), the client id, the user (or a
	// device's auth-id), the device, the source host.
	Address    string `json:"address,omitempty"`
	Connection string `json:"connection,omitempty"`
	ClientID   string `json:"clientId,omitempty"`
	User       string `json:"user,omitempty"`
	Device     string `json:"device,omitempty"`
	Source     string `json:"source,omitempty"`
	// Evidence holds the figures the finding rests on.
	Evidence map[string]any `json:"evidence"`
}

// Talker is a connection ranked by message rate.
type Talker struct {
	Tenant            string  `json:"tenant"`
	Connection        string  `json:"connection"`
	Protocol          string  `json:"protocol"`
	ClientID          string  `json:"clientId,omitempty"`
	User              string  `json:"user,omitempty"`
	Device            string  `json:"device,omitempty"`
	MessagesPerSecond float64 `json:"messagesPerSecond"` // in + out, the last 5 s interval
	Share             float64 `json:"share"`             // of the tenant's connections' rate, 0..1
	BytesIn           uint64  `json:"bytesIn"`
	BytesOut          uint64  `json:"bytesOut"`
}

// Report is the finder's answer.
type Report struct {
	Findings   []Finding  `json:"findings"`
	TopTalkers []Talker   `json:"topTalkers"`
	Thresholds Thresholds `json:"thresholds"`
}

// finder holds the error makers' sketches.
type finder struct {
	o  *Observer
	mu sync.Mutex
	w  [kindSketchCount]windowed // guarded by mu
}

func newFinder(o *Observer) *finder {
	f := &finder{o: o}
	for i := range f.w {
		f.w[i] = windowed{cur: newSketch(), prev: newSketch()}
	}
	return f
}

func (f *finder) window() time.Duration {
	return f.o.opt.Finder.Merge(DefaultThresholds).Window
}

func (f *finder) add(kind int, key, detail string) {
	now := f.o.opt.Now()
	f.mu.Lock()
	f.w[kind].add(key, detail, now, f.window())
	f.mu.Unlock()
}

// connected counts a connect per client id.
func (f *finder) connected(info conns.Info) {
	if info.ClientID == "" {
		return
	}
	f.add(kindSketchReconn, info.Tenant+"\x00"+info.ClientID, audit.Source(info.Remote))
}

// audit counts refused logins per source and claimed user, denials per
// principal.
func (f *finder) audit(tenantName string, e audit.Event) {
	switch e.Kind {
	case audit.LoginFailed:
		f.add(kindSketchAuth, tenantName+"\x00"+e.User+"\x00"+audit.Source(e.Remote), e.Reason)
	case audit.Denied:
		who := e.User
		if who == "" {
			who = e.ClientID
		}
		f.add(kindSketchDenied, tenantName+"\x00"+who+"\x00"+e.Protocol, e.Action+" "+e.Resource)
	}
}

// Report finds the anomalies of a tenant ("": every tenant) with the
// thresholds th; its zero fields take the tenant's own
// (Options.TenantThresholds), then the node's (Options.Finder), then the
// defaults. Report.Thresholds are the tenant's (all tenants: the node's).
func (o *Observer) Report(tenantName string, query Thresholds) Report {
	r, _ := o.report(tenantName, query, 1)
	return r
}

// thresholdsOf returns a cache of each tenant's thresholds with query
// first, and the report's thresholds (tenantName "": the node's).
func (o *Observer) thresholdsOf(tenantName string, query Thresholds) (func(string) Thresholds, Thresholds) {
	node := o.opt.Finder.Merge(DefaultThresholds)
	ths := map[string]Thresholds{}
	thOf := func(t string) Thresholds {
		th, ok := ths[t]
		if !ok {
			th = query
			if o.opt.TenantThresholds != nil {
				th = th.Merge(o.opt.TenantThresholds(t))
			}
			th = th.Merge(node)
			th.Window = node.Window // the sketches' window is fixed
			ths[t] = th
		}
		return th
	}
	th := query.Merge(node)
	th.Window = node.Window
	if tenantName != "" {
		th = thOf(tenantName)
	}
	return thOf, th
}

// report is Report for one of split nodes (peers.go): the error makers'
// thresholds divided by split (rounded up: a key that reaches a
// threshold on the cluster reaches its split share on one node at least)
// and split times topN talkers per tenant; it also returns the tenants'
// message rates (the talkers' shares' denominators).
func (o *Observer) report(tenantName string, query Thresholds, split int) (Report, map[string]float64) {
	thOf, th := o.thresholdsOf(tenantName, query)
	cut := func(n int) uint64 { return uint64((n + split - 1) / split) }
	r := Report{Findings: []Finding{}, TopTalkers: []Talker{}, Thresholds: th}
	mine := func(t string) bool { return tenantName == "" || t == tenantName }

	// Top talkers.
	var entries []*conns.Entry
	o.opt.Conns.Each(func(e *conns.Entry) {
		if mine(e.Info().Tenant) {
			entries = append(entries, e)
		}
	})
	perTenant := map[string][]Talker{}
	sum := map[string]float64{}
	for _, e := range entries {
		s := o.opt.Conns.Snapshot(e, false)
		rate := s.RateIn + s.RateOut
		sum[s.Tenant] += rate
		if rate <= 0 {
			continue
		}
		perTenant[s.Tenant] = append(perTenant[s.Tenant], Talker{Tenant: s.Tenant, Connection: s.ID, Protocol: s.Protocol,
			ClientID: s.ClientID, User: s.User, Device: s.Device, MessagesPerSecond: rate, BytesIn: s.BytesIn, BytesOut: s.BytesOut})
	}
	for t, list := range perTenant {
		th := thOf(t)
		slices.SortFunc(list, func(a, b Talker) int { return cmp.Compare(b.MessagesPerSecond, a.MessagesPerSecond) })
		if n := min(th.TopN*split, 1000); len(list) > n {
			list = list[:n]
		}
		for i := range list {
			list[i].Share = list[i].MessagesPerSecond / sum[t]
			if f, ok := talkerFinding(list[i], sum[t], th); ok {
				r.Findings = append(r.Findings, f)
			}
		}
		r.TopTalkers = append(r.TopTalkers, list...)
	}
	slices.SortFunc(r.TopTalkers, func(a, b Talker) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(b.MessagesPerSecond, a.MessagesPerSecond))
	})

	// Growing backlogs.
	if o.opt.History != nil && o.opt.Addresses != nil {
		type akey struct{ tenant, name string }
		var list []akey
		dl := map[akey]bool{}
		o.opt.Addresses(func(t string, a *address.Address) {
			if !mine(t) {
				return
			}
			switch a.Type {
			case address.Queue, address.Topic:
				list = append(list, akey{t, a.Name})
				if a.Type == address.Queue {
					dl[akey{t, a.DeadLetterAddress()}] = true
				}
			}
		})
		for _, k := range list {
			if f, ok := backlogFinding(o.opt.History.Series(history.AddressSeries(k.tenant, k.name)), thOf(k.tenant), dl[k]); ok {
				f.Tenant, f.Address = k.tenant, k.name
				r.Findings = append(r.Findings, f)
			}
		}
	}

	// Error makers.
	now := o.opt.Now()
	f := o.find
	f.mu.Lock()
	type hit struct {
		key    string
		n      uint64
		detail string
		last   time.Time
	}
	var hits [kindSketchCount][]hit
	for kind := range f.w {
		f.w[kind].rotate(now, th.Window)
		f.w[kind].each(func(key string, n uint64, detail string, last time.Time) {
			hits[kind] = append(hits[kind], hit{key, n, detail, last})
		})
	}
	f.mu.Unlock()
	for _, h := range hits[kindSketchReconn] {
		t, client, _ := strings.Cut(h.key, "\x00")
		if !mine(t) || h.n < cut(thOf(t).ReconnectLoop) {
			continue
		}
		r.Findings = append(r.Findings, Finding{Kind: KindReconnectLoop, Tenant: t, ClientID: client, Source: h.detail,
			Summary:  reconnectSummary(client, h.n, 2*th.Window),
			Evidence: map[string]any{"connects": h.n, "within": (2 * th.Window).String(), "lastConnect": h.last.UTC().Format(time.RFC3339), "source": h.detail}})
	}
	for _, h := range hits[kindSketchAuth] {
		parts := strings.SplitN(h.key, "\x00", 3)
		if len(parts) != 3 || !mine(parts[0]) || h.n < cut(thOf(parts[0]).AuthFailures) {
			continue
		}
		r.Findings = append(r.Findings, Finding{Kind: KindAuthFailures, Tenant: parts[0], User: parts[1], Source: parts[2],
			Summary:  authSummary(parts[1], parts[2], h.n, 2*th.Window),
			Evidence: map[string]any{"failures": h.n, "within": (2 * th.Window).String(), "lastReason": h.detail, "last": h.last.UTC().Format(time.RFC3339)}})
	}
	for _, h := range hits[kindSketchDenied] {
		parts := strings.SplitN(h.key, "\x00", 3)
		if len(parts) != 3 || !mine(parts[0]) || h.n < cut(thOf(parts[0]).Denied) {
			continue
		}
		r.Findings = append(r.Findings, Finding{Kind: KindDenied, Tenant: parts[0], User: parts[1],
			Summary:  deniedSummary(parts[1], h.n, 2*th.Window),
			Evidence: map[string]any{"refused": h.n, "within": (2 * th.Window).String(), "protocol": parts[2], "last": truncate(h.detail)}})
	}

	// Silent devices (silent.go).
	r.Findings = append(r.Findings, o.silentFindings(now, mine, thOf)...)

	sortFindings(r.Findings)
	return r, sum
}

func sortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Kind, b.Kind))
	})
}

// talkerFinding is the finding of a top talker whose share of its
// tenant's rate (tenantRate) reaches th's, if it does.
func talkerFinding(tk Talker, tenantRate float64, th Thresholds) (Finding, bool) {
	if tk.Share < th.TopShare || tk.MessagesPerSecond < th.TopMinRate {
		return Finding{}, false
	}
	return Finding{Kind: KindTopTalker, Tenant: tk.Tenant, Connection: tk.Connection,
		ClientID: tk.ClientID, User: tk.User, Device: tk.Device,
		Summary: fmt.Sprintf("%s carries %.0f%% of the tenant's messages (%.1f/s)", who(tk.ClientID, tk.User, tk.Connection), tk.Share*100, tk.MessagesPerSecond),
		Evidence: map[string]any{"messagesPerSecond": round2(tk.MessagesPerSecond), "share": round2(tk.Share),
			"tenantMessagesPerSecond": round2(tenantRate), "bytesIn": tk.BytesIn, "bytesOut": tk.BytesOut, "protocol": tk.Protocol}}, true
}

// The error makers' summaries (a cluster's merge rewrites them with the
// summed counts, peers.go).
func reconnectSummary(client string, n uint64, within time.Duration) string {
	return fmt.Sprintf("client %q connected %d times within %s", client, n, within)
}

func authSummary(user, source string, n uint64, within time.Duration) string {
	return fmt.Sprintf("%d refused logins as %q from %s within %s", n, user, source, within)
}

func deniedSummary(who string, n uint64, within time.Duration) string {
	return fmt.Sprintf("%q was refused %d actions within %s", who, n, within)
}

// backlogFinding looks at the last th.BacklogPoints intervals of an
// address's history: a finding when its backlog grew by th.BacklogGrowth
// or more and ends at the window's highest.
func backlogFinding(v history.View, th Thresholds, deadLetter bool) (Finding, bool) {
	n := len(v.Backlog)
	if n < 2 {
		return Finding{}, false
	}
	from := max(n-1-th.BacklogPoints, 0)
	first, last := v.Backlog[from], v.Backlog[n-1]
	if last-first < th.BacklogGrowth || slices.Max(v.Backlog[from:]) > last {
		return Finding{}, false
	}
	var in, out float64
	for i := from + 1; i < n; i++ {
		in += v.In[i]
		out += v.Out[i]
	}
	k := float64(n - 1 - from)
	in, out = in/k, out/k
	secs := int64(n-1-from) * int64(v.Step)
	f := Finding{Kind: KindBacklog, Evidence: map[string]any{"backlogFrom": first, "backlogTo": last, "seconds": secs,
		"messagesInPerSecond": round2(in), "messagesOutPerSecond": round2(out)}}
	switch {
	case deadLetter:
		f.Kind = KindDeadLetter
		f.Summary = fmt.Sprintf("dead-letter address grew from %d to %d messages in %d s", first, last, secs)
	case out == 0:
		f.Summary = fmt.Sprintf("backlog grew from %d to %d in %d s and nothing was consumed", first, last, secs)
	default:
		f.Summary = fmt.Sprintf("backlog grew from %d to %d in %d s: consumers take %.1f/s of %.1f/s", first, last, secs, out, in)
	}
	return f, true
}

func who(clientID, user, conn string) string {
	switch {
	case clientID != "":
		return fmt.Sprintf("client %q", clientID)
	case user != "":
		return fmt.Sprintf("user %q", user)
	}
	return "connection " + conn
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

func truncate(s string) string {
	if len(s) > evidenceMaxDetails {
		return s[:evidenceMaxDetails]
	}
	return s
}

// windowed is a sketch of the current window and of the previous one.
type windowed struct {
	cur, prev *sketch
	start     time.Time
}

func (w *windowed) rotate(now time.Time, window time.Duration) {
	switch d := now.Sub(w.start); {
	case w.start.IsZero():
		w.start = now
	case d >= 2*window:
		w.prev, w.cur = newSketch(), newSketch()
		w.start = now
	case d >= window:
		w.prev, w.cur = w.cur, newSketch()
		w.start = w.start.Add(window)
	}
}

func (w *windowed) add(key, detail string, now time.Time, window time.Duration) {
	w.rotate(now, window)
	w.cur.add(key, detail, now)
}

// each calls f with every key and its guaranteed count over both windows.
func (w *windowed) each(f func(key string, n uint64, detail string, last time.Time)) {
	for key, e := range w.cur.m {
		n := e.count - e.err
		if p := w.prev.m[key]; p != nil {
			n += p.count - p.err
		}
		f(key, n, e.detail, e.last)
	}
	for key, p := range w.prev.m {
		if w.cur.m[key] == nil {
			f(key, p.count-p.err, p.detail, p.last)
		}
	}
}

// sketch is a space-saving sketch: SketchSize counters; a new key
// replaces the smallest and inherits its count as its error.
type sketch struct {
	m map[string]*ssEntry
}

type ssEntry struct {
	count, err uint64
	detail     string
	last       time.Time
}

func newSketch() *sketch { return &sketch{m: map[string]*ssEntry{}} }

func (s *sketch) add(key, detail string, now time.Time) {
	if e := s.m[key]; e != nil {
		e.count++
		e.detail, e.last = detail, now
		return
	}
	if len(s.m) < SketchSize {
		s.m[key] = &ssEntry{count: 1, detail: detail, last: now}
		return
	}
	var minKey string
	var minE *ssEntry
	for k, e := range s.m {
		if minE == nil || e.count < minE.count {
			minKey, minE = k, e
		}
	}
	delete(s.m, minKey)
	s.m[key] = &ssEntry{count: minE.count + 1, err: minE.count, detail: detail, last: now}
}
