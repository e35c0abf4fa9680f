package console

import (
	"net/http"
)

// The anomalies view (issue 15; docs/anomalies.md): the anomaly finder's
// findings with their evidence, linked to the connection or address they
// concern, and the top talkers, from GET /api/anomalies (a tenant user's:
// /api/tenants/{own}/anomalies).

// anomalyReport is the API's answer (internal/metrics.Report).
type anomalyReport struct {
	Findings   []finding `json:"findings"`
	TopTalkers []struct {
		Tenant            string  `json:"tenant"`
		Connection        string  `json:"connection"`
		Protocol          string  `json:"protocol"`
		ClientID          string  `json:"clientId"`
		User              string  `json:"user"`
		Device            string  `json:"device"`
		MessagesPerSecond float64 `json:"messagesPerSecond"`
		Share             float64 `json:"share"`
		BytesIn           uint64  `json:"bytesIn"`
		BytesOut          uint64  `json:"bytesOut"`
	} `json:"topTalkers"`
	Thresholds map[string]any `json:"thresholds"`
	// Missing names the cluster's nodes that did not answer: what only
	// they saw is not in the report.
	Missing []string `json:"missing"`
}

// finding is one of the report's findings.
type finding struct {
	Kind       string         `json:"kind"`
	Tenant     string         `json:"tenant"`
	Summary    string         `json:"summary"`
	Address    string         `json:"address"`
	Connection string         `json:"connection"`
	ClientID   string         `json:"clientId"`
	User       string         `json:"user"`
	Device     string         `json:"device"`
	Source     string         `json:"source"`
	Evidence   map[string]any `json:"evidence"`
}

// kindTitles name the kinds of finding for people.
var kindTitles = map[string]string{
	"top_talker":          "Top talker",
	"backlog_growing":     "Backlog growing",
	"dead_letter_growing": "Dead letters growing",
	"reconnect_loop":      "Reconnect loop",
	"auth_failures":       "Refused logins",
	"denied":              "Refused actions",
	"silent_device":       "Silent device",
}

func (s *Server) anomalies(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	t := r.URL.Query().Get("tenant")
	if !sess.p.IsAdmin() {
		t = sess.p.Tenant
	}
	path := "/api/anomalies"
	if t != "" {
		path = "/api/tenants/" + esc(t) + "/anomalies"
	}
	// The API's thresholds pass through (a bookmark keeps them).
	th := map[string][]string{}
	for _, k := range []string{"reconnectLoop", "authFailures", "denied", "topN", "topShare", "topMinRate", "backlogPoints", "backlogGrowth",
		"silentFactor", "silentMinSeconds"} {
		if v := r.URL.Query().Get(k); v != "" {
			th[k] = []string{v}
		}
	}
	path += encodeQuery(th)
	var rep anomalyReport
	if err := s.call(r, http.MethodGet, path, nil, &rep); err != nil {
		s.fail(w, r, err)
		return
	}
	// The silent devices also have their own list (the devices page's
	// links).
	var silent []finding
	for _, f := range rep.Findings {
		if f.Kind == "silent_device" {
			silent = append(silent, f)
		}
	}
	s.render(w, r, http.StatusOK, "anomalies", &page{Title: "Anomalies", Nav: "anomalies",
		Data: map[string]any{"Report": rep, "Tenant": t, "Kinds": kindTitles, "Silent": silent}})
}
