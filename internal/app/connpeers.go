package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/conns"
)

// Connections across a cluster's nodes (docs/admin-api.md, "Across
// nodes"): every node answers requests about its own connections on the
// engine's system connection, at connPeerSubject + its name; the admin
// API of any node asks the others (admin.ConnPeers). The system account
// is the platform's own: no tenant's client can publish to it.

// connPeerSubject is the prefix of the nodes' connection subjects.
const connPeerSubject = "throng.admin.conns."

// connPeerRequest is one request to a node.
type connPeerRequest struct {
	Op     string       `json:"op"` // list, get, close
	Filter conns.Filter `json:"filter,omitzero"`
	After  string       `json:"after,omitempty"`
	Limit  int          `json:"limit,omitempty"`
	ID     string       `json:"id,omitempty"`
	Tenant string       `json:"tenant,omitempty"` // get, close: only a connection of this tenant
	By     string       `json:"by,omitempty"`     // close: who, for the log and the reason
}

// connPeerReply is a node's answer.
type connPeerReply struct {
	Connections []conns.Snapshot `json:"connections,omitempty"`
	Next        string           `json:"next,omitempty"`
	Connection  *conns.Snapshot  `json:"connection,omitempty"`
	NotFound    bool             `json:"notFound,omitempty"`
	Error       string           `json:"error,omitempty"`
}

// serveConnPeers starts this node's answers, on a clustered node only
// (a single node has nobody to ask it).
func (a *App) serveConnPeers() error {
	log := a.log.With("component", "admin")
	return servePeer(a, connPeerSubject, "connection requests",
		func(o *observer, req connPeerRequest) connPeerReply { return answerConnPeer(o.conns, req, log.Info) },
		func(msg string) connPeerReply { return connPeerReply{Error: msg} })
}

// servePeer subscribes, on a clustered node's system connection, to
// subject + this node's name and answers each JSON request with answer's
// JSON reply (fail's for a request or reply that does not encode). The
// subscription ends with the system connection at shutdown.
func servePeer[Req, Rep any](a *App, subject, what string, answer func(*observer, Req) Rep, fail func(string) Rep) error {
	a.mu.Lock()
	nc, o := a.sysConn, a.obs
	a.mu.Unlock()
	if !a.cfg.Cluster.Enabled() || nc == nil || o == nil {
		return nil
	}
	_, err := nc.Subscribe(subject+o.conns.Node(), func(m *nats.Msg) {
		var req Req
		var rep Rep
		if err := json.Unmarshal(m.Data, &req); err != nil {
			rep = fail("bad request: " + err.Error())
		} else {
			rep = answer(o, req)
		}
		b, err := json.Marshal(rep)
		if err != nil {
			b, _ = json.Marshal(fail(err.Error()))
		}
		_ = m.Respond(b)
	})
	if err != nil {
		return fmt.Errorf("app: %s: %w", what, err)
	}
	return nil
}

// answerConnPeer answers req from this node's registry.
func answerConnPeer(reg *conns.Registry, req connPeerRequest, logf func(string, ...any)) connPeerReply {
	var rep connPeerReply
	switch req.Op {
	case "list":
		limit := req.Limit
		if limit < 1 || limit > 1000 {
			limit = 100
		}
		page, next := reg.List(req.Filter, req.After, limit)
		rep.Connections = make([]conns.Snapshot, 0, len(page))
		for _, e := range page {
			rep.Connections = append(rep.Connections, reg.Snapshot(e, false))
		}
		rep.Next = next
	case "get", "close":
		e, ok := reg.Get(req.ID)
		if ok && req.Tenant != "" && e.Info().Tenant != req.Tenant {
			ok = false
		}
		switch {
		case !ok:
			rep.NotFound = true
		case req.Op == "get":
			s := reg.Snapshot(e, true)
			rep.Connection = &s
		default:
			logf("closing connection", "id", req.ID, "tenant", e.Info().Tenant, "by", req.By, "from", "another node")
			e.Close("closed by " + req.By)
		}
	default:
		rep.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	return rep
}

// connsAcrossNodes adds the asking side to the admin API's observation
// part on a clustered node; a single node's is returned as it is.
func (a *App) connsAcrossNodes(o admin.Observe) admin.Observe {
	if !a.cfg.Cluster.Enabled() || o.Conns == nil {
		return o
	}
	a.mu.Lock()
	nc, eng := a.sysConn, a.eng
	a.mu.Unlock()
	if nc == nil || eng == nil {
		return o
	}
	o.Peers = &connPeers{app: a, nc: nc}
	return o
}

// connPeers is admin.ConnPeers on the system connection.
type connPeers struct {
	app *App
	nc  *nats.Conn
}

func (p *connPeers) Nodes() []admin.PeerNode {
	st := p.app.clusterStatus()
	if st == nil {
		return nil
	}
	var out []admin.PeerNode
	for _, n := range st.Nodes {
		if !n.Self {
			out = append(out, admin.PeerNode{Name: n.Name, Online: n.Online})
		}
	}
	return out
}

// ask sends req to node and decodes its answer; no answer in time or no
// responder (the node is down) is admin.ErrNodeNoAnswer.
func (p *connPeers) ask(ctx context.Context, node string, req connPeerRequest) (connPeerReply, error) {
	var rep connPeerReply
	b, err := json.Marshal(req)
	if err != nil {
		return rep, err
	}
	m, err := p.nc.RequestWithContext(ctx, connPeerSubject+node, b)
	if err != nil {
		return rep, fmt.Errorf("%w: %v", admin.ErrNodeNoAnswer, err)
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return rep, fmt.Errorf("node %s: %w", node, err)
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	if rep.NotFound {
		return rep, admin.ErrConnNotFound
	}
	return rep, nil
}

func (p *connPeers) List(ctx context.Context, node string, f conns.Filter, after string, limit int) ([]conns.Snapshot, string, error) {
	rep, err := p.ask(ctx, node, connPeerRequest{Op: "list", Filter: f, After: after, Limit: limit})
	return rep.Connections, rep.Next, err
}

func (p *connPeers) Get(ctx context.Context, node, id, tenant string) (conns.Snapshot, error) {
	rep, err := p.ask(ctx, node, connPeerRequest{Op: "get", ID: id, Tenant: tenant})
	if err != nil {
		return conns.Snapshot{}, err
	}
	if rep.Connection == nil {
		return conns.Snapshot{}, fmt.Errorf("node %s: no connection in the answer", node)
	}
	return *rep.Connection, nil
}

func (p *connPeers) Close(ctx context.Context, node, id, tenant, by string) error {
	_, err := p.ask(ctx, node, connPeerRequest{Op: "close", ID: id, Tenant: tenant, By: by})
	return err
}
