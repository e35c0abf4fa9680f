package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// ---- dashboard

// totals is what the dashboard shows and its chart polls.
type totals struct {
	Time        int64   `json:"t"` // Unix seconds
	Connections float64 `json:"connections"`
	In          float64 `json:"in"`  // messages per second
	Out         float64 `json:"out"` // messages per second
	Backlog     int64   `json:"backlog"`
	StoredBytes int64   `json:"storedBytes"`
	Addresses   int     `json:"addresses"`
	Tenants     int     `json:"tenants"`
	// This node's process (the platform administrator only).
	HeapBytes uint64 `json:"heapBytes,omitempty"`
	SysBytes  uint64 `json:"sysBytes,omitempty"`
	DiskFree  uint64 `json:"diskFree,omitempty"`
	DiskTotal uint64 `json:"diskTotal,omitempty"`
	Nodes     int    `json:"nodes"`
}

// nodeStatus is GET /api/status (with the cluster's nodes when the node
// reports them).
type nodeStatus struct {
	Version string `json:"version"`
	Ready   bool   `json:"ready"`
	Uptime  string `json:"uptime"`
	Cluster *struct {
		Clustered bool   `json:"clustered"`
		Name      string `json:"name"`
		Nodes     []struct {
			Name     string `json:"name"`
			Self     bool   `json:"self"`
			Leader   bool   `json:"leader"`
			Online   bool   `json:"online"`
			Current  bool   `json:"current"`
			LastSeen string `json:"lastSeen"`
		} `json:"nodes"`
	} `json:"cluster"`
}

// tenantUsage is GET /api/tenants/{t}?usage=true.
type tenantUsage struct {
	tenant.Tenant
	Usage *usage `json:"usage"`
}

// usage is a tenant's usage vs its limits (admin.Usage; connections were
// counted for MQTT only before every protocol counted).
type usage struct {
	Connections          admin.Amount `json:"connections"`
	MQTTConnections      admin.Amount `json:"mqttConnections"`
	Addresses            admin.Amount `json:"addresses"`
	Users                admin.Amount `json:"users"`
	StoredBytes          admin.Amount `json:"storedBytes"`
	MessagesInPerSecond  admin.Amount `json:"messagesInPerSecond"`
	MessagesOutPerSecond admin.Amount `json:"messagesOutPerSecond"`
}

// Conns is the connections figure, whichever the API gives.
func (u *usage) Conns() admin.Amount {
	if u.Connections == (admin.Amount{}) {
		return u.MQTTConnections
	}
	return u.Connections
}

// visibleTenants are the tenants the user may read: the platform
// administrator's all, anyone else's its own.
func (s *Server) visibleTenants(r *http.Request) ([]string, error) {
	sess := sessionOf(r)
	if !sess.p.IsAdmin() {
		return []string{sess.p.Tenant}, nil
	}
	var ts []tenant.Tenant
	if err := s.call(r, http.MethodGet, "/api/tenants", nil, &ts); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out, nil
}

func (s *Server) collect(r *http.Request) (totals, []tenantUsage, error) {
	tot := totals{Time: s.cfg.Now().Unix(), Nodes: 1}
	names, err := s.visibleTenants(r)
	if err != nil {
		return tot, nil, err
	}
	var rows []tenantUsage
	for _, n := range names {
		var tu tenantUsage
		if err := s.call(r, http.MethodGet, "/api/tenants/"+esc(n)+"?usage=true", nil, &tu); err != nil {
			if notFound(err) {
				continue // deleted meanwhile
			}
			return tot, nil, err
		}
		rows = append(rows, tu)
		tot.Tenants++
		if u := tu.Usage; u != nil {
			tot.Connections += u.Conns().Used
			tot.In += u.MessagesInPerSecond.Used
			tot.Out += u.MessagesOutPerSecond.Used
			tot.StoredBytes += int64(u.StoredBytes.Used)
		}
		as, err := s.addressList(r, n)
		if err != nil {
			continue
		}
		tot.Addresses += len(as)
		for _, a := range as {
			if a.Stats != nil {
				tot.Backlog += a.Stats.Backlog
			}
		}
	}
	if sessionOf(r).p.IsAdmin() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		tot.HeapBytes, tot.SysBytes = ms.HeapAlloc, ms.Sys
		if s.cfg.DataDir != "" {
			tot.DiskFree, tot.DiskTotal = diskSpace(s.cfg.DataDir)
		}
	}
	return tot, rows, nil
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	tot, rows, err := s.collect(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var st *nodeStatus
	if sessionOf(r).p.IsAdmin() {
		st = &nodeStatus{}
		if err := s.call(r, http.MethodGet, "/api/status", nil, st); err != nil {
			st = nil
		} else if st.Cluster != nil && len(st.Cluster.Nodes) > 0 {
			tot.Nodes = len(st.Cluster.Nodes)
		}
	}
	s.render(w, r, http.StatusOK, "dashboard", &page{Title: "Dashboard", Nav: "dashboard", Data: map[string]any{
		"Totals": tot, "Tenants": rows, "Status": st,
	}})
}

// dashboardJSON is what the dashboard's chart polls.
func (s *Server) dashboardJSON(w http.ResponseWriter, r *http.Request) {
	tot, _, err := s.collect(r)
	if err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(tot)
}

// ---- tenants

func (s *Server) tenants(w http.ResponseWriter, r *http.Request) {
	_, rows, err := s.collect(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var plans []struct {
		Name string `json:"name"`
	}
	_ = s.call(r, http.MethodGet, "/api/plans", nil, &plans)
	s.render(w, r, http.StatusOK, "tenants", &page{Title: "Tenants", Nav: "tenants", Data: map[string]any{"Tenants": rows, "Plans": plans}})
}

// switchTenant is the tenant picker: the same view of another tenant.
func (s *Server) switchTenant(w http.ResponseWriter, r *http.Request) {
	t := r.URL.Query().Get("tenant")
	to := "/t/" + esc(t)
	switch v := r.URL.Query().Get("view"); v {
	case "addresses", "users", "devices":
		to += "/" + v
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	req := admin.TenantRequest{Name: name, Plan: r.PostFormValue("plan")}
	if err := s.call(r, http.MethodPost, "/api/tenants", req, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w, r, "/t/"+esc(name), fmt.Sprintf("Tenant %s created.", name))
}

func (s *Server) tenant(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	var tu tenantUsage
	if err := s.call(r, http.MethodGet, "/api/tenants/"+esc(t)+"?usage=true", nil, &tu); err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "tenant", &page{Title: "Tenant " + t, Nav: "tenants", Tenant: t, Data: tu})
}

// ---- addresses

// addressRow is an address with its rates.
type addressRow struct {
	admin.AddressView
	In, Out float64 // messages per second
}

func (s *Server) addressList(r *http.Request, t string) ([]addressRow, error) {
	var as []admin.AddressView
	if err := s.call(r, http.MethodGet, "/api/tenants/"+esc(t)+"/addresses?stats=true", nil, &as); err != nil {
		return nil, err
	}
	rows := make([]addressRow, 0, len(as))
	for _, a := range as {
		row := addressRow{AddressView: a}
		if a.Stats != nil {
			row.In, row.Out = s.rates.observe(t+"\x00"+a.Name, a.Stats.MessagesIn, a.Stats.MessagesOut)
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

func (s *Server) addresses(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	rows, err := s.addressList(r, t)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q != "" {
		kept := rows[:0]
		for _, a := range rows {
			if strings.Contains(a.Name, q) {
				kept = append(kept, a)
			}
		}
		rows = kept
	}
	s.render(w, r, http.StatusOK, "addresses", &page{Title: "Addresses of " + t, Nav: "addresses", Tenant: t, Data: map[string]any{"Addresses": rows, "Q": q}})
}

// addressTypes explains each type on the create form.
var addressTypes = []struct{ Type, Summary, Detail string }{
	{"queue", "Stored; each message to one of the competing consumers.", "Work queues and commands: kept until a consumer accepts it, redelivered after a failure, moved to the dead-letter address after too many failed deliveries."},
	{"topic", "Stored; every subscriber gets every message.", "Telemetry and events: durable subscriptions collect messages while their client is away; MQTT clients subscribe here."},
	{"subscription", "A named durable subscription on a topic.", "Competing consumers share one subscription's copy of the topic's messages. Needs the topic."},
	{"anycast", "Direct, never stored; one consumer gets each message.", "Request/response between live parties: accepted only while a consumer is attached; the consumer's outcome goes back to the sender."},
	{"multicast", "Direct, never stored; every current consumer gets it.", "Live fan-out where a missed message does not matter: at most once, dropped when no one listens."},
}

func (s *Server) newAddress(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	var as []admin.AddressView
	if err := s.call(r, http.MethodGet, "/api/tenants/"+esc(t)+"/addresses", nil, &as); err != nil {
		s.fail(w, r, err)
		return
	}
	var topics, queues []string
	for _, a := range as {
		switch a.Type {
		case address.Topic:
			topics = append(topics, a.Name)
		case address.Queue:
			queues = append(queues, a.Name)
		}
	}
	s.render(w, r, http.StatusOK, "address_new", &page{Title: "New address", Nav: "addresses", Tenant: t, Data: map[string]any{
		"Types": addressTypes, "Topics": topics, "Queues": queues, "Form": map[string]string{"type": r.URL.Query().Get("type")},
	}})
}

func (s *Server) createAddress(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	f := r.PostForm
	req := admin.AddressRequest{
		Name:       strings.TrimSpace(f.Get("name")),
		Type:       address.Type(f.Get("type")),
		DeadLetter: strings.TrimSpace(f.Get("deadLetter")),
		Topic:      strings.TrimSpace(f.Get("topic")),
	}
	var bad string
	num := func(field string) int64 {
		v := strings.TrimSpace(f.Get(field))
		if v == "" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			bad = fmt.Sprintf("%s: %q is not a whole number", field, v)
		}
		return n
	}
	req.Limits.MaxMessages = num("maxMessages")
	req.Limits.MaxBytes = num("maxBytes")
	if v := strings.TrimSpace(f.Get("maxAge")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			bad = fmt.Sprintf("maxAge: %q is not a duration such as 24h or 90m", v)
		}
		req.Limits.MaxAge = address.Duration(d)
	}
	err := error(nil)
	if bad == "" {
		err = s.call(r, http.MethodPost, "/api/tenants/"+esc(t)+"/addresses", req, nil)
		if err != nil {
			bad = err.Error()
		}
	}
	if bad != "" {
		// The form again, filled in, with the reason.
		var topics, queues []string
		var as []admin.AddressView
		if s.call(r, http.MethodGet, "/api/tenants/"+esc(t)+"/addresses", nil, &as) == nil {
			for _, a := range as {
				switch a.Type {
				case address.Topic:
					topics = append(topics, a.Name)
				case address.Queue:
					queues = append(queues, a.Name)
				}
			}
		}
		form := map[string]string{}
		for k := range f {
			form[k] = f.Get(k)
		}
		status := http.StatusBadRequest
		if err != nil {
			status = statusOf(err)
		}
		s.render(w, r, status, "address_new", &page{Title: "New address", Nav: "addresses", Tenant: t, Error: bad, Data: map[string]any{
			"Types": addressTypes, "Topics": topics, "Queues": queues, "Form": form,
		}})
		return
	}
	s.done(w, r, "/t/"+esc(t)+"/address/"+addrPath(req.Name), fmt.Sprintf("Address %s (%s) created.", req.Name, req.Type))
}

func (s *Server) address(w http.ResponseWriter, r *http.Request) {
	t, name := r.PathValue("tenant"), r.PathValue("name")
	var a admin.AddressView
	if err := s.call(r, http.MethodGet, "/api/tenants/"+esc(t)+"/addresses/"+addrPath(name), nil, &a); err != nil {
		s.fail(w, r, err)
		return
	}
	row := addressRow{AddressView: a}
	if a.Stats != nil {
		row.In, row.Out = s.rates.observe(t+"\x00"+a.Name, a.Stats.MessagesIn, a.Stats.MessagesOut)
	}
	data := map[string]any{"A": row, "CanPublish": s.cfg.Producers != nil}
	if r.URL.Query().Get("peek") != "" {
		var msgs json.RawMessage
		n := r.URL.Query().Get("limit")
		if n == "" {
			n = "10"
		}
		if err := s.call(r, http.MethodGet, "/api/tenants/"+esc(t)+"/messages/"+addrPath(name)+"?limit="+esc(n), nil, &msgs); err != nil {
			data["PeekError"] = peekError(err)
		} else {
			data["Peek"], data["Peeked"] = decodeMessages(msgs), true
		}
	}
	s.render(w, r, http.StatusOK, "address", &page{Title: name, Nav: "addresses", Tenant: t, Data: data})
}

// peekError says why a peek failed; the endpoint may not be in this
// build.
func peekError(err error) string {
	if notFound(err) && strings.Contains(err.Error(), "no such resource") {
		return "Peeking is not available on this node (no messages endpoint in its API)."
	}
	return err.Error()
}

// peekMessage is one message of a peek (GET /api/tenants/{t}/messages/{name}).
type peekMessage struct {
	Sequence   uint64            `json:"sequence"`
	Time       time.Time         `json:"time"`
	Properties map[string]string `json:"properties"`
	Size       int64             `json:"size"`
	Body       string            `json:"body"`
	Encoding   string            `json:"encoding"`
	Truncated  bool              `json:"truncated"`
}

// decodeMessages reads a peek answer.
func decodeMessages(raw json.RawMessage) []peekMessage {
	var res struct {
		Messages []peekMessage `json:"messages"`
	}
	_ = json.Unmarshal(raw, &res)
	return res.Messages
}

func (s *Server) addressAction(w http.ResponseWriter, r *http.Request) {
	t, name := r.PathValue("tenant"), r.PathValue("name")
	base := "/api/tenants/" + esc(t) + "/addresses/" + addrPath(name)
	purge := "/api/tenants/" + esc(t) + "/purge/" + addrPath(name)
	move := "/api/tenants/" + esc(t) + "/move/" + addrPath(name)
	self := "/t/" + esc(t) + "/address/" + addrPath(name)
	switch r.PostFormValue("action") {
	case "delete":
		path := base
		if r.PostFormValue("force") == "true" {
			path += "?force=true"
		}
		if err := s.call(r, http.MethodDelete, path, nil, nil); err != nil {
			s.fail(w, r, err)
			return
		}
		s.done(w, r, "/t/"+esc(t)+"/addresses", fmt.Sprintf("Address %s deleted.", name))
	case "purge":
		var res map[string]any
		if err := s.call(r, http.MethodPost, purge, nil, &res); err != nil {
			s.fail(w, r, err)
			return
		}
		s.done(w, r, self, fmt.Sprintf("Address %s purged: %v messages removed.", name, res["purged"]))
	case "publish":
		res, err := s.publishTest(r, t, name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.done(w, r, self, "Test message published: "+res+".")
	case "move":
		to := strings.TrimSpace(r.PostFormValue("to"))
		var res map[string]any
		if err := s.call(r, http.MethodPost, move+"?to="+esc(to), nil, &res); err != nil {
			s.fail(w, r, err)
			return
		}
		s.done(w, r, self, fmt.Sprintf("%v messages of %s moved to %s.", res["moved"], name, to))
	default:
		s.renderError(w, r, nil, http.StatusBadRequest, "Unknown action.")
	}
}

// ---- users

func (s *Server) users(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	var us []admin.UserView
	if err := s.call(r, http.MethodGet, "/api/tenants/"+esc(t)+"/users", nil, &us); err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "users", &page{Title: "Users of " + t, Nav: "users", Tenant: t, Data: map[string]any{"Users": us}})
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	name := strings.TrimSpace(r.PostFormValue("name"))
	req := admin.UserRequest{Name: name, Password: r.PostFormValue("password")}
	if role := r.PostFormValue("role"); role != "" {
		req.Roles = []tenant.Role{tenant.Role(role)}
	}
	if pat := strings.TrimSpace(r.PostFormValue("pattern")); pat != "" {
		perm := tenant.Permission{Pattern: pat}
		for _, a := range r.PostForm["actions"] {
			perm.Actions = append(perm.Actions, tenant.Action(a))
		}
		req.Permissions = []tenant.Permission{perm}
	}
	if err := s.call(r, http.MethodPost, "/api/tenants/"+esc(t)+"/users", req, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w, r, "/t/"+esc(t)+"/users", fmt.Sprintf("User %s created.", name))
}

// ---- connections (GET /api/connections, when the node serves it)

func (s *Server) connectionsPath(r *http.Request) string {
	sess := sessionOf(r)
	q := r.URL.Query()
	t := q.Get("tenant")
	if !sess.p.IsAdmin() {
		t = sess.p.Tenant
	}
	var v = make(map[string][]string)
	for _, k := range []string{"protocol", "user", "device", "clientId", "limit", "after"} {
		if x := q.Get(k); x != "" {
			v[k] = []string{x}
		}
	}
	qs := encodeQuery(v)
	if t != "" {
		return "/api/tenants/" + esc(t) + "/connections" + qs
	}
	return "/api/connections" + qs
}

func encodeQuery(v map[string][]string) string {
	if len(v) == 0 {
		return ""
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(esc(k) + "=" + esc(v[k][0]))
	}
	return b.String()
}

// connList reads a connections answer: a list, or an object with one,
// the next page's start and the cluster's nodes that did not answer.
func connList(raw json.RawMessage) ([]map[string]any, string, []string) {
	var list []map[string]any
	if json.Unmarshal(raw, &list) == nil {
		return list, "", nil
	}
	var obj struct {
		Connections []map[string]any `json:"connections"`
		Items       []map[string]any `json:"items"`
		Next        string           `json:"next"`
		Missing     []string         `json:"missing"`
	}
	_ = json.Unmarshal(raw, &obj)
	if obj.Connections == nil {
		obj.Connections = obj.Items
	}
	return obj.Connections, obj.Next, obj.Missing
}

func (s *Server) connections(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	data := map[string]any{"Q": r.URL.Query()}
	if err := s.call(r, http.MethodGet, s.connectionsPath(r), nil, &raw); err != nil {
		if notFound(err) && strings.Contains(err.Error(), "no such resource") {
			data["Unavailable"] = true
		} else {
			s.fail(w, r, err)
			return
		}
	} else {
		data["Conns"], data["Next"], data["Missing"] = connList(raw)
	}
	s.render(w, r, http.StatusOK, "connections", &page{Title: "Connections", Nav: "connections", Data: data})
}

// connAPI is the API path of connection id for the user: the platform
// administrator's /api/connections, a tenant user's under its tenant.
func connAPI(r *http.Request, id string) string {
	sess := sessionOf(r)
	if sess.p.IsAdmin() {
		return "/api/connections/" + esc(id)
	}
	return "/api/tenants/" + esc(sess.p.Tenant) + "/connections/" + esc(id)
}

func (s *Server) connection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var c map[string]any
	if err := s.call(r, http.MethodGet, connAPI(r, id), nil, &c); err != nil {
		s.fail(w, r, err)
		return
	}
	links, _ := c["linkList"].([]any)
	delete(c, "linkList")
	var ls []map[string]any
	for _, l := range links {
		if m, ok := l.(map[string]any); ok {
			ls = append(ls, m)
		}
	}
	tenantName, _ := c["tenant"].(string)
	s.render(w, r, http.StatusOK, "connection", &page{Title: "Connection " + id, Nav: "connections", Data: map[string]any{
		"C": c, "ID": id, "Links": ls, "CanClose": sessionOf(r).p.MayAdminister(tenantName, auth.ScopeTenantWrite),
	}})
}

func (s *Server) closeConnection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.call(r, http.MethodDelete, connAPI(r, id), nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w, r, "/connections", fmt.Sprintf("Connection %s closed.", id))
}

// history is an API history series for the dashboard's chart: the
// node's for the platform administrator, the tenant's for others.
func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	path := "/api/history"
	if !sess.p.IsAdmin() {
		path = "/api/tenants/" + esc(sess.p.Tenant) + "/history"
	}
	var raw json.RawMessage
	if err := s.call(r, http.MethodGet, path, nil, &raw); err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(raw)
}
