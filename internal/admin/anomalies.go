package admin

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/throngmq/throng/internal/metrics"
)

// The anomaly finder (issue 15; docs/anomalies.md): top talkers, growing
// backlogs and dead-letter addresses, reconnect loops, refused logins and
// refused actions, each with its evidence.

// Anomalies is what the anomaly routes read (*metrics.Observer).
type Anomalies interface {
	// Report finds the anomalies of a tenant ("": all) with th (zero
	// fields: the defaults).
	Report(tenantName string, th metrics.Thresholds) metrics.Report
}

func init() {
	routes = append(routes,
		route{"GET", "/api/anomalies", accessPlatform, (*Server).allAnomalies},
		route{"GET", "/api/tenants/{tenant}/anomalies", accessTenant, (*Server).tenantAnomalies},
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
// the thresholds for this request: reconnectLoop, authFailures, denied,
// topN, backlogPoints (positive integers), backlogGrowth (a positive
// integer), topShare (0 < x ≤ 1), topMinRate (> 0).
func (s *Server) writeAnomalies(w http.ResponseWriter, r *http.Request, tenantName string) {
	if s.cfg.Observe.Anomalies == nil {
		writeError(w, CodeNotFound, "the anomaly finder is not available on this node")
		return
	}
	var th metrics.Thresholds
	q := r.URL.Query()
	ints := []struct {
		name string
		dst  *int
		max  int
	}{
		{"reconnectLoop", &th.ReconnectLoop, 1 << 30},
		{"authFailures", &th.AuthFailures, 1 << 30},
		{"denied", &th.Denied, 1 << 30},
		{"topN", &th.TopN, 1000},
		{"backlogPoints", &th.BacklogPoints, 179},
	}
	for _, p := range ints {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > p.max {
			writeError(w, CodeInvalid, fmt.Sprintf("%s must be an integer from 1 to %d, not %q", p.name, p.max, v))
			return
		}
		*p.dst = n
	}
	if v := q.Get("backlogGrowth"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			writeError(w, CodeInvalid, fmt.Sprintf("backlogGrowth must be a positive integer, not %q", v))
			return
		}
		th.BacklogGrowth = n
	}
	if v := q.Get("topShare"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f <= 1) {
			writeError(w, CodeInvalid, fmt.Sprintf("topShare must be a number above 0 and at most 1, not %q", v))
			return
		}
		th.TopShare = f
	}
	if v := q.Get("topMinRate"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f < 1e12) {
			writeError(w, CodeInvalid, fmt.Sprintf("topMinRate must be a positive number, not %q", v))
			return
		}
		th.TopMinRate = f
	}
	writeJSON(w, http.StatusOK, s.cfg.Observe.Anomalies.Report(tenantName, th))
}
