package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/history"
	"github.com/throngmq/throng/internal/metrics"
)

// Anomalies and connection histories across a cluster's nodes
// (docs/anomalies.md "Across nodes", docs/admin-api.md): every node
// answers for its own anomaly finder and history rings on the engine's
// system connection, at observePeerSubject + its name, as it answers for
// its connections (connpeers.go); the admin API of any node asks the
// others (admin.ObservePeers, implemented by connPeers) and merges
// (internal/metrics/peers.go).

// observePeerSubject is the prefix of the nodes' observation subjects.
const observePeerSubject = "throng.admin.observe."

// observePeerRequest is one request to a node.
type observePeerRequest struct {
	Op         string             `json:"op"` // anomalies, tally, history
	Tenant     string             `json:"tenant,omitempty"`
	Thresholds metrics.Thresholds `json:"thresholds,omitzero"` // anomalies: the request's
	Split      int                `json:"split,omitempty"`     // anomalies: the nodes asked
	Keys       []metrics.TallyKey `json:"keys,omitempty"`      // tally
	ID         string             `json:"id,omitempty"`        // history: the connection
}

// observePeerReply is a node's answer.
type observePeerReply struct {
	Report   *metrics.NodeReport `json:"report,omitempty"`
	Tally    []int64             `json:"tally,omitempty"`
	History  *history.View       `json:"history,omitempty"`
	NotFound bool                `json:"notFound,omitempty"`
	Error    string              `json:"error,omitempty"`
}

// serveObservePeers starts this node's answers, on a clustered node only.
func (a *App) serveObservePeers() error {
	return servePeer(a, observePeerSubject, "observation requests", answerObservePeer,
		func(msg string) observePeerReply { return observePeerReply{Error: msg} })
}

// answerObservePeer answers req from this node's observer.
func answerObservePeer(o *observer, req observePeerRequest) observePeerReply {
	var rep observePeerReply
	switch req.Op {
	case "anomalies":
		r := o.tenants.NodeReport(req.Tenant, req.Thresholds, req.Split)
		rep.Report = &r
	case "tally":
		rep.Tally = o.tenants.Tally(req.Keys)
		if rep.Tally == nil {
			rep.Tally = []int64{}
		}
	case "history":
		// As on the node itself: a live connection's only (of the
		// tenant, when given).
		e, ok := o.conns.Get(req.ID)
		if !ok || (req.Tenant != "" && e.Info().Tenant != req.Tenant) {
			rep.NotFound = true
			break
		}
		v := o.hist.Series(history.ConnectionSeries(o.conns.ID(e)))
		rep.History = &v
	default:
		rep.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	return rep
}

// askObserve sends req to node and decodes its answer; no answer in time
// or no responder is admin.ErrNodeNoAnswer.
func (p *connPeers) askObserve(ctx context.Context, node string, req observePeerRequest) (observePeerReply, error) {
	var rep observePeerReply
	b, err := json.Marshal(req)
	if err != nil {
		return rep, err
	}
	m, err := p.nc.RequestWithContext(ctx, observePeerSubject+node, b)
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

func (p *connPeers) Anomalies(ctx context.Context, node, tenant string, th metrics.Thresholds, split int) (metrics.NodeReport, error) {
	rep, err := p.askObserve(ctx, node, observePeerRequest{Op: "anomalies", Tenant: tenant, Thresholds: th, Split: split})
	if err == nil && rep.Report == nil {
		err = fmt.Errorf("node %s: no report in the answer", node)
	}
	if err != nil {
		return metrics.NodeReport{}, err
	}
	return *rep.Report, nil
}

func (p *connPeers) Tally(ctx context.Context, node string, keys []metrics.TallyKey) ([]int64, error) {
	rep, err := p.askObserve(ctx, node, observePeerRequest{Op: "tally", Keys: keys})
	if err == nil && len(rep.Tally) != len(keys) {
		err = fmt.Errorf("node %s: %d counts for %d keys", node, len(rep.Tally), len(keys))
	}
	return rep.Tally, err
}

func (p *connPeers) History(ctx context.Context, node, id, tenant string) (history.View, error) {
	rep, err := p.askObserve(ctx, node, observePeerRequest{Op: "history", ID: id, Tenant: tenant})
	if err == nil && rep.History == nil {
		err = fmt.Errorf("node %s: no history in the answer", node)
	}
	if err != nil {
		return history.View{}, err
	}
	return *rep.History, nil
}

// connPeers answers for the other nodes' anomalies and histories too.
var _ admin.ObservePeers = (*connPeers)(nil)
