package metrics

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// The anomaly finder across a cluster's nodes (issue 15,
// docs/anomalies.md "Across nodes"). Each node sees only its own
// connections, sightings and error makers; the node asked merges every
// node's part in two rounds (internal/admin/anomalies.go asks,
// internal/app/anomalypeers.go answers):
//
//  1. NodeReport: each node's report with the error makers' thresholds
//     divided by the number of nodes (a key that reaches a threshold on
//     the cluster reaches its share on one node at least: every
//     cluster-wide finding has a candidate), topN times the nodes per
//     tenant, and the tenants' message rates;
//  2. Tally of the candidates' keys on every node: the error makers'
//     counts (summed) and the silent devices' last sightings (a device
//     that moved from node A to node B is seen by B: A's candidate is
//     dropped).
//
// Merge then sums the top talkers per device or client id and ranks
// them again with their share of the cluster's tenant rate, sums the
// error makers' counts against the full thresholds, keeps a silent
// device only when no node saw it more recently than the node that finds
// it silent, and keeps one of the backlog findings each node makes of the
// same address (its stream is the cluster's).

// NodeReport is one node's part of a cluster's report.
type NodeReport struct {
	Report
	// TenantRates is the message rate (in + out per second) of each
	// tenant's connections on the node: the shares' denominators.
	TenantRates map[string]float64 `json:"tenantRates"`
}

// NodeReport is this node's part of a report of split nodes (split ≤ 1:
// a report of this node alone).
func (o *Observer) NodeReport(tenantName string, query Thresholds, split int) NodeReport {
	r, rates := o.report(tenantName, query, max(split, 1))
	return NodeReport{Report: r, TenantRates: rates}
}

// TallyKey names what Tally counts: an error maker (Kind
// KindReconnectLoop, KindAuthFailures, KindDenied; Key its sketch key) or
// a device (KindSilent; Key tenant NUL device id).
type TallyKey struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
}

// FindingKey is the TallyKey of an error maker's or a silent device's
// finding; false for the other kinds.
func FindingKey(f Finding) (TallyKey, bool) {
	switch f.Kind {
	case KindSilent:
		return TallyKey{f.Kind, f.Tenant + "\x00" + f.Device}, true
	case KindReconnectLoop:
		return TallyKey{f.Kind, f.Tenant + "\x00" + f.ClientID}, true
	case KindAuthFailures:
		return TallyKey{f.Kind, f.Tenant + "\x00" + f.User + "\x00" + f.Source}, true
	case KindDenied:
		proto, _ := f.Evidence["protocol"].(string)
		return TallyKey{f.Kind, f.Tenant + "\x00" + f.User + "\x00" + proto}, true
	}
	return TallyKey{}, false
}

// TallyKeys are the distinct keys of the parts' findings, in order.
func TallyKeys(parts []NodeReport) []TallyKey {
	var keys []TallyKey
	for _, p := range parts {
		for _, f := range p.Findings {
			if k, ok := FindingKey(f); ok {
				keys = append(keys, k)
			}
		}
	}
	slices.SortFunc(keys, func(a, b TallyKey) int { return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Key, b.Key)) })
	return slices.Compact(keys)
}

// Tally answers for each key what this node counted: an error maker's
// guaranteed count over the sketches' two windows, a device's last
// sighting (Unix milliseconds); 0 when the node has none.
func (o *Observer) Tally(keys []TallyKey) []int64 {
	out := make([]int64, len(keys))
	now, window := o.opt.Now(), o.find.window()
	f := o.find
	f.mu.Lock()
	for kind := range f.w {
		f.w[kind].rotate(now, window)
	}
	for i, k := range keys {
		if kind, ok := sketchOf(k.Kind); ok {
			out[i] = int64(f.w[kind].count(k.Key))
		}
	}
	f.mu.Unlock()
	for i, k := range keys {
		if k.Kind == KindSilent {
			t, dev, _ := strings.Cut(k.Key, "\x00")
			out[i] = o.devs.lastSeen(t, dev, now)
		}
	}
	return out
}

// sketchOf is the sketch of an error maker's kind.
func sketchOf(kind string) (int, bool) {
	switch kind {
	case KindReconnectLoop:
		return kindSketchReconn, true
	case KindAuthFailures:
		return kindSketchAuth, true
	case KindDenied:
		return kindSketchDenied, true
	}
	return 0, false
}

// count is key's guaranteed count over both windows (as each).
func (w *windowed) count(key string) uint64 {
	var n uint64
	if e := w.cur.m[key]; e != nil {
		n += e.count - e.err
	}
	if e := w.prev.m[key]; e != nil {
		n += e.count - e.err
	}
	return n
}

// lastSeen is a device's last sighting on this node, Unix milliseconds
// (0: not tracked); now for a device waiting for commands here.
func (d *devices) lastSeen(tenantName, device string, now time.Time) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.byTenant[tenantName][device]
	if s.flags&seenWaiting != 0 {
		// Waiting for commands on this node now: seen now, so that
		// another node's "stopped waiting" of a device that moved here
		// is not reported as silent.
		return now.UnixMilli()
	}
	return s.last
}

// Merge is the cluster's report from the nodes' parts (NodeReport,
// asked with split = the number of nodes) and their tallies of keys
// (TallyKeys of the parts; tallies[i] is parts[i]'s node's, nil when it
// did not answer: then its own findings' figures stand for it). The
// thresholds are this node's, as in Report.
func (o *Observer) Merge(tenantName string, query Thresholds, parts []NodeReport, keys []TallyKey, tallies [][]int64) Report {
	thOf, th := o.thresholdsOf(tenantName, query)
	r := Report{Findings: []Finding{}, TopTalkers: []Talker{}, Thresholds: th}
	r.TopTalkers, r.Findings = mergeTalkers(parts, thOf)

	at := make(map[TallyKey]int, len(keys))
	for j, k := range keys {
		at[k] = j
	}
	// tallied is node i's tally of k (ok false: none).
	tallied := func(i int, k TallyKey) (int64, bool) {
		j, ok := at[k]
		if !ok || i >= len(tallies) || tallies[i] == nil {
			return 0, false
		}
		return tallies[i][j], true
	}

	type cand struct {
		f    Finding
		node int
		n    float64
	}
	errs := map[TallyKey][]cand{}
	silent := map[TallyKey][]cand{}
	var order []TallyKey // first seen first: the merged findings' order before the sort
	backlog := map[string]bool{}
	silentIn := map[string]float64{} // per tenant: the nodes' counts of silent devices
	for i, p := range parts {
		counted := map[string]bool{}
		for _, f := range p.Findings {
			switch f.Kind {
			case KindTopTalker: // ranked again above
			case KindBacklog, KindDeadLetter:
				k := f.Kind + "\x00" + f.Tenant + "\x00" + f.Address
				if !backlog[k] {
					backlog[k] = true
					r.Findings = append(r.Findings, f)
				}
			case KindReconnectLoop, KindAuthFailures, KindDenied, KindSilent:
				k, _ := FindingKey(f)
				m := errs
				if f.Kind == KindSilent {
					m = silent
					if !counted[f.Tenant] {
						counted[f.Tenant] = true
						silentIn[f.Tenant] += evidenceNum(f.Evidence["silentInTenant"])
					}
				}
				if m[k] == nil {
					order = append(order, k)
				}
				m[k] = append(m[k], cand{f: f, node: i, n: evidenceNum(f.Evidence[countField(f.Kind)])})
			default: // a kind this node does not know: as the node said
				r.Findings = append(r.Findings, f)
			}
		}
	}

	var quiet []Finding
	dropped := map[string]int{}
	for _, k := range order {
		if cs := errs[k]; cs != nil {
			// The sum of every node's count: its tally, or (no tally, or
			// a window turned between the rounds) its finding's count.
			own := map[int]float64{}
			best := cs[0]
			for _, c := range cs {
				own[c.node] = c.n
				if c.n > best.n {
					best = c
				}
			}
			var total float64
			for i := range parts {
				n, _ := tallied(i, k)
				total += max(float64(n), own[i])
			}
			if f, ok := errorFinding(best.f, uint64(total), thOf(best.f.Tenant)); ok {
				r.Findings = append(r.Findings, f)
			}
			continue
		}
		cs := silent[k]
		// The device's last sighting on any node.
		var latest int64
		for i := range parts {
			if n, ok := tallied(i, k); ok {
				latest = max(latest, n)
			}
		}
		var kept *Finding
		for _, c := range cs {
			// The finding's last sighting is to the second: to the end
			// of that second.
			ls, err := time.Parse(time.RFC3339, evidenceString(c.f.Evidence["lastSeen"]))
			if err != nil {
				continue
			}
			last := ls.UnixMilli() + 999
			if n, ok := tallied(c.node, k); ok {
				if n > last {
					continue // seen again on its node since its report
				}
				last = n
			}
			if last >= latest && kept == nil {
				f := c.f
				kept = &f
			}
		}
		t := cs[0].f.Tenant
		if kept == nil {
			dropped[t] += len(cs)
			continue
		}
		dropped[t] += len(cs) - 1
		quiet = append(quiet, *kept)
	}
	slices.SortStableFunc(quiet, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant),
			cmp.Compare(evidenceNum(b.Evidence["silentSeconds"]), evidenceNum(a.Evidence["silentSeconds"])),
			cmp.Compare(a.Device, b.Device))
	})
	kept := map[string]int{}
	for _, f := range quiet {
		kept[f.Tenant]++
	}
	if len(quiet) > maxSilentFindings {
		quiet = quiet[:maxSilentFindings]
	}
	for _, f := range quiet {
		ev := make(map[string]any, len(f.Evidence))
		for k, v := range f.Evidence {
			ev[k] = v
		}
		// The nodes' counts less the candidates another node saw later
		// (or that two nodes found): every node counts beyond the 500
		// it lists.
		ev["silentInTenant"] = max(int(silentIn[f.Tenant])-dropped[f.Tenant], kept[f.Tenant])
		f.Evidence = ev
		r.Findings = append(r.Findings, f)
	}
	sortFindings(r.Findings)
	return r
}

// mergeTalkers sums the parts' top talkers per tenant and device (or
// client id, or connection) and ranks them again: the top topN of each
// tenant with their share of the tenant's rate on every node, and the
// findings of those above the tenant's share.
func mergeTalkers(parts []NodeReport, thOf func(string) Thresholds) ([]Talker, []Finding) {
	type key struct{ tenant, who string }
	sums := map[key]*Talker{}
	top := map[key]float64{} // the largest connection's rate: it names the talker
	rates := map[string]float64{}
	for _, p := range parts {
		for t, v := range p.TenantRates {
			rates[t] += v
		}
		for _, tk := range p.TopTalkers {
			k := key{tk.Tenant, "c\x00" + tk.Connection}
			switch {
			case tk.Device != "":
				k.who = "d\x00" + tk.Device
			case tk.ClientID != "":
				k.who = "i\x00" + tk.ClientID
			}
			s := sums[k]
			if s == nil {
				c := tk
				sums[k], top[k] = &c, tk.MessagesPerSecond
				continue
			}
			rate, in, out := s.MessagesPerSecond+tk.MessagesPerSecond, s.BytesIn+tk.BytesIn, s.BytesOut+tk.BytesOut
			if tk.MessagesPerSecond > top[k] {
				*s, top[k] = tk, tk.MessagesPerSecond
			}
			s.MessagesPerSecond, s.BytesIn, s.BytesOut = rate, in, out
		}
	}
	perTenant := map[string][]Talker{}
	for k, s := range sums {
		perTenant[k.tenant] = append(perTenant[k.tenant], *s)
	}
	talkers, findings := []Talker{}, []Finding{}
	for t, list := range perTenant {
		th := thOf(t)
		slices.SortFunc(list, func(a, b Talker) int {
			return cmp.Or(cmp.Compare(b.MessagesPerSecond, a.MessagesPerSecond), cmp.Compare(a.Connection, b.Connection))
		})
		if len(list) > th.TopN {
			list = list[:th.TopN]
		}
		total := max(rates[t], 1e-9) // a talker's own rate is part of it
		for i := range list {
			list[i].Share = min(list[i].MessagesPerSecond/total, 1)
			if f, ok := talkerFinding(list[i], rates[t], th); ok {
				findings = append(findings, f)
			}
		}
		talkers = append(talkers, list...)
	}
	slices.SortFunc(talkers, func(a, b Talker) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(b.MessagesPerSecond, a.MessagesPerSecond))
	})
	return talkers, findings
}

// countField is the evidence field of an error maker's count.
func countField(kind string) string {
	switch kind {
	case KindReconnectLoop:
		return "connects"
	case KindAuthFailures:
		return "failures"
	case KindDenied:
		return "refused"
	}
	return ""
}

// errorFinding is f (a node's finding of an error maker) with the
// cluster's count n, if n reaches the tenant's threshold.
func errorFinding(f Finding, n uint64, th Thresholds) (Finding, bool) {
	within, err := time.ParseDuration(evidenceString(f.Evidence["within"]))
	if err != nil {
		within = 2 * th.Window
	}
	switch f.Kind {
	case KindReconnectLoop:
		if n < uint64(th.ReconnectLoop) {
			return f, false
		}
		f.Summary = reconnectSummary(f.ClientID, n, within)
	case KindAuthFailures:
		if n < uint64(th.AuthFailures) {
			return f, false
		}
		f.Summary = authSummary(f.User, f.Source, n, within)
	case KindDenied:
		if n < uint64(th.Denied) {
			return f, false
		}
		f.Summary = deniedSummary(f.User, n, within)
	}
	ev := make(map[string]any, len(f.Evidence))
	for k, v := range f.Evidence {
		ev[k] = v
	}
	ev[countField(f.Kind)] = n
	f.Evidence = ev
	return f, true
}

// evidenceNum reads a number of a finding's evidence: this node's own
// (an integer type) or another's (decoded from JSON: float64).
func evidenceNum(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case int:
		return float64(n)
	case int64:
		return float64(n)
	case uint64:
		return float64(n)
	}
	return 0
}

func evidenceString(v any) string {
	s, _ := v.(string)
	return s
}
