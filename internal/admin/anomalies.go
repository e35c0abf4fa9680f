package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/throngmq/throng/internal/metrics"
	"github.com/throngmq/throng/internal/tenant"
)

// The anomaly finder (issue 15; docs/anomalies.md): top talkers, growing
// backlogs and dead-letter addresses, reconnect loops, refused logins and
// refused actions, each with its evidence.

// Anomalies is what the anomaly routes read (*metrics.Observer).
type Anomalies interface {
	// Report finds the anomalies of a tenant ("": all) with th (zero
	// fields: the defaults).
	Report(tenantName string, th metrics.Thresholds) metrics.Report
	// NodeReport is this node's part of a report of split nodes, Tally
	// its counts of the parts' keys, Merge the cluster's report from
	// every node's part and tally (internal/metrics/peers.go).
	NodeReport(tenantName string, th metrics.Thresholds, split int) metrics.NodeReport
	Tally(keys []metrics.TallyKey) []int64
	Merge(tenantName string, th metrics.Thresholds, parts []metrics.NodeReport, keys []metrics.TallyKey, tallies [][]int64) metrics.Report
}

// AnomalyReport is the answer of the anomaly routes.
type AnomalyReport struct {
	metrics.Report
	// Missing names the nodes of a cluster that did not answer (or are
	// offline): what only they saw is not in the report.
	Missing []string `json:"missing,omitempty"`
}

func init() {
	routes = append(routes,
		route{"GET", "/api/anomalies", accessPlatform, (*Server).allAnomalies},
		route{"GET", "/api/tenants/{tenant}/anomalies", accessTenant, (*Server).tenantAnomalies},
		route{"GET", "/api/tenants/{tenant}/anomaly-thresholds", accessTenant, (*Server).getAnomalyThresholds},
		route{"PUT", "/api/tenants/{tenant}/anomaly-thresholds", accessTenant, (*Server).putAnomalyThresholds},
		route{"DELETE", "/api/tenants/{tenant}/anomaly-thresholds", accessTenant, (*Server).deleteAnomalyThresholds},
	)
}

func (s *Server) allAnomalies(w http.ResponseWriter, r *http.Request) {
	s.writeAnomalies(w, r, "")
}

func (s *Server) tenantAnomalies(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.lookupTenant(w, r); ok {
		s.writeAnomalies(w, r, t.Name)
	}
}

// writeAnomalies answers with the report; the query may lower or raise
// the thresholds for this request (thresholdParams); the others are the
// tenant's own (anomaly-thresholds), then the node's.
func (s *Server) writeAnomalies(w http.ResponseWriter, r *http.Request, tenantName string) {
	if s.cfg.Observe.Anomalies == nil {
		writeError(w, CodeNotFound, "the anomaly finder is not available on this node")
		return
	}
	var th metrics.Thresholds
	q := r.URL.Query()
	for _, p := range thresholdParams(&th) {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !p.ok(f) {
			writeError(w, CodeInvalid, fmt.Sprintf("%s must be %s, not %q", p.name, p.want, v))
			return
		}
		p.set(f)
	}
	if peers, ok := s.cfg.Observe.Peers.(ObservePeers); ok {
		writeJSON(w, http.StatusOK, s.reportAcross(r.Context(), peers, tenantName, th))
		return
	}
	writeJSON(w, http.StatusOK, AnomalyReport{Report: s.cfg.Observe.Anomalies.Report(tenantName, th)})
}

// reportAcross is the report of every node (docs/anomalies.md, "Across
// nodes"; internal/metrics/peers.go): each live node's part, asked at
// once and bounded by peerWait, then each answering node's tally of the
// parts' error makers and silent devices (a second round, only when
// there is a candidate), merged on this node. A node that does not
// answer either round (or is offline) is named in Missing.
func (s *Server) reportAcross(ctx context.Context, peers ObservePeers, tenantName string, th metrics.Thresholds) AnomalyReport {
	an := s.cfg.Observe.Anomalies
	self := s.cfg.Observe.Conns.Node()
	var others []string
	var missing []string
	for _, n := range peers.Nodes() {
		switch {
		case n.Name == self:
		case n.Online:
			others = append(others, n.Name)
		default:
			missing = append(missing, n.Name)
		}
	}
	split := 1 + len(others) + len(missing)
	parts := make([]metrics.NodeReport, 1+len(others))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, node := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, peerWait)
			defer cancel()
			parts[i+1], errs[i+1] = peers.Anomalies(rctx, node, tenantName, th, split)
		}()
	}
	parts[0] = an.NodeReport(tenantName, th, split)
	wg.Wait()
	nodes := []string{self}
	answered := parts[:1]
	for i, node := range others {
		if errs[i+1] != nil {
			missing = append(missing, node)
			continue
		}
		nodes = append(nodes, node)
		answered = append(answered, parts[i+1])
	}

	keys := metrics.TallyKeys(answered)
	tallies := make([][]int64, len(answered))
	if len(keys) > 0 {
		for i := 1; i < len(nodes); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rctx, cancel := context.WithTimeout(ctx, peerWait)
				defer cancel()
				t, err := peers.Tally(rctx, nodes[i], keys)
				if err == nil && len(t) == len(keys) {
					tallies[i] = t
				}
			}()
		}
		tallies[0] = an.Tally(keys)
		wg.Wait()
		for i := 1; i < len(nodes); i++ {
			if tallies[i] == nil {
				// Its part is in, but not its sightings of the
				// others' candidates.
				missing = append(missing, nodes[i])
			}
		}
	}
	out := AnomalyReport{Report: an.Merge(tenantName, th, answered, keys, tallies)}
	if missing != nil {
		slices.Sort(missing)
		out.Missing = missing
	}
	return out
}

// thresholdParam is one threshold: its name (as in the query and in
// metrics.Thresholds' JSON), what it may be, how to read and set it.
type thresholdParam struct {
	name, want string
	ok         func(float64) bool
	get        func() float64
	set        func(float64)
}

// thresholdParams are the settable thresholds of th: reconnectLoop,
// authFailures, denied, topN, backlogPoints (positive integers, topN at
// most 1000, backlogPoints at most 179), backlogGrowth (a positive
// integer), topShare (0 < x ≤ 1), topMinRate, silentFactor and
// silentMinSeconds (positive numbers). The sketches' window is the
// node's.
func thresholdParams(th *metrics.Thresholds) []thresholdParam {
	integer := func(name string, dst *int, max int) thresholdParam {
		return thresholdParam{name: name, want: fmt.Sprintf("an integer from 1 to %d", max),
			ok:  func(f float64) bool { return f >= 1 && f <= float64(max) && f == float64(int(f)) },
			get: func() float64 { return float64(*dst) }, set: func(f float64) { *dst = int(f) }}
	}
	number := func(name string, dst *float64, max float64, want string) thresholdParam {
		return thresholdParam{name: name, want: want, ok: func(f float64) bool { return f > 0 && f <= max },
			get: func() float64 { return *dst }, set: func(f float64) { *dst = f }}
	}
	return []thresholdParam{
		integer("reconnectLoop", &th.ReconnectLoop, 1<<30),
		integer("authFailures", &th.AuthFailures, 1<<30),
		integer("denied", &th.Denied, 1<<30),
		integer("topN", &th.TopN, 1000),
		integer("backlogPoints", &th.BacklogPoints, 179),
		{name: "backlogGrowth", want: "a positive integer",
			ok:  func(f float64) bool { return f >= 1 && f < 1<<62 && f == float64(int64(f)) },
			get: func() float64 { return float64(th.BacklogGrowth) }, set: func(f float64) { th.BacklogGrowth = int64(f) }},
		number("topShare", &th.TopShare, 1, "a number above 0 and at most 1"),
		number("topMinRate", &th.TopMinRate, 1e12, "a positive number"),
		number("silentFactor", &th.SilentFactor, 1e6, "a positive number"),
		number("silentMinSeconds", &th.SilentMinSeconds, 1e9, "a positive number"),
	}
}

// tenantThresholds is the body of the anomaly-thresholds routes: the
// tenant's own thresholds (a field left out or 0: the node's) and the
// ones its reports use.
type tenantThresholds struct {
	Thresholds metrics.Thresholds `json:"thresholds"`
	Effective  metrics.Thresholds `json:"effective"`
}

// TenantAnomalyThresholds reads a tenant's own thresholds from its
// definition (zero: none, or unreadable).
func TenantAnomalyThresholds(t *tenant.Tenant) metrics.Thresholds {
	var th metrics.Thresholds
	if t != nil && len(t.AnomalyThresholds) > 0 {
		_ = json.Unmarshal(t.AnomalyThresholds, &th)
	}
	return th
}

func (s *Server) getAnomalyThresholds(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	s.writeThresholds(w, t.Name, TenantAnomalyThresholds(t))
}

func (s *Server) writeThresholds(w http.ResponseWriter, tenantName string, own metrics.Thresholds) {
	body := tenantThresholds{Thresholds: own}
	if s.cfg.Observe.Anomalies != nil {
		body.Effective = s.cfg.Observe.Anomalies.Report(tenantName, metrics.Thresholds{}).Thresholds
	}
	writeJSON(w, http.StatusOK, body)
}

// putAnomalyThresholds replaces the tenant's own thresholds (a tenant
// administrator sets its own tenant's; an empty object: the node's).
func (s *Server) putAnomalyThresholds(w http.ResponseWriter, r *http.Request) {
	var th metrics.Thresholds
	if !decode(w, r, &th) {
		return
	}
	if th.Window != 0 {
		writeError(w, CodeInvalid, "window is the node's (the sketches are shared by every tenant)")
		return
	}
	for _, p := range thresholdParams(&th) {
		if v := p.get(); v != 0 && !p.ok(v) {
			writeError(w, CodeInvalid, fmt.Sprintf("%s must be %s (or 0: the node's), not %v", p.name, p.want, v))
			return
		}
	}
	s.storeThresholds(w, r, th)
}

func (s *Server) deleteAnomalyThresholds(w http.ResponseWriter, r *http.Request) {
	s.storeThresholds(w, r, metrics.Thresholds{})
}

func (s *Server) storeThresholds(w http.ResponseWriter, r *http.Request, th metrics.Thresholds) {
	old, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	t := *old // the store's copy is shared: change a copy
	t.AnomalyThresholds = nil
	if th != (metrics.Thresholds{}) {
		b, err := json.Marshal(th)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		t.AnomalyThresholds = b
	}
	if err := s.cfg.Router.UpdateTenant(r.Context(), &t); err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeThresholds(w, t.Name, th)
}
