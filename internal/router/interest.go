package router

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Stored interest in the topic space.
//
// A durable (QoS ≥ 1, AMQP durable) topic-space message only needs the
// engine's store when a stored consumer — a durable subscription, a
// `$share` group, a replaying subscriber — has a filter matching its
// name: live subscribers get it from core NATS either way. Storing every
// such message cost one JetStream write (and a wait for its
// acknowledgement) per publish, which capped MQTT QoS 1 at the engine's
// store rate. So each node keeps the filter subjects of the TOPICSPACE
// consumers of a tenant, and a durable publish with no matching filter
// goes out live on `t.<name>` (still marked durable, so receivers see its
// QoS), acknowledged at once.
//
// The set is the engine's consumer list of TOPICSPACE, read when the topic
// space is first used, re-read every interestRefresh and whenever a node
// signals a change on interestSubject. A consumer created on this node is
// added at once, before Consume returns, so a subscriber never misses a
// message published on its own node after it subscribed. On another node
// it counts from that node's next refresh (normally the signal's round
// trip, well under a millisecond in a cluster; at most interestRefresh):
// a message published there in between reaches the subscriber live if it
// is connected, and is not stored for it otherwise. Stale entries (deleted
// consumers) only cost storing messages nobody reads until the refresh.
const (
	interestSubject = "_throng.router.interest"
	interestRefresh = 10 * time.Second
)

type storedInterest struct {
	gen atomic.Uint64 // bumped on every change; Producers cache their answer per generation

	mu      sync.Mutex
	filters [][]string           // tokenized filter subjects; guarded by mu
	all     bool                 // a consumer without a filter; guarded by mu
	local   map[string]time.Time // filters added on this node, and when; guarded by mu
	loaded  atomic.Bool          // set (under mu) once the refresher runs; read without it on every durable publish
	stop    func()               // ends the refresher; guarded by mu
	kick    chan struct{}
}

// match reports whether a stored consumer's filter matches subject.
func (si *storedInterest) match(subject string) bool {
	toks := splitSubject(subject)
	si.mu.Lock()
	defer si.mu.Unlock()
	if si.all {
		return true
	}
	for _, f := range si.filters {
		if subjectMatch(f, toks) {
			return true
		}
	}
	return false
}

// hasLocked reports whether filter f is in the set as it is. si.mu held.
func (si *storedInterest) hasLocked(f string) bool {
	for _, g := range si.filters {
		if strings.Join(g, ".") == f {
			return true
		}
	}
	return false
}

// subjectMatch is NATS subject matching: "*" matches one token, ">" the
// rest (one token or more).
func subjectMatch(filter, toks []string) bool {
	for i, f := range filter {
		if f == ">" {
			return len(toks) > i
		}
		if i >= len(toks) || (f != "*" && f != toks[i]) {
			return false
		}
	}
	return len(filter) == len(toks)
}

// addInterest registers the filters of a consumer just created (or
// resumed) on this node and, if they are new, tells the other nodes to
// re-read the set.
func (t *tenantState) addInterest(filters []string) {
	si := &t.interest
	now := time.Now()
	si.mu.Lock()
	if si.local == nil {
		si.local = map[string]time.Time{}
	}
	changed := false
	if len(filters) == 0 && !si.all {
		si.all, changed = true, true
	}
	for _, f := range filters {
		if _, ok := si.local[f]; !ok && !si.hasLocked(f) {
			si.filters = append(si.filters, splitSubject(f))
			changed = true
		}
		si.local[f] = now
	}
	si.mu.Unlock()
	if !changed {
		return
	}
	si.gen.Add(1)
	_ = t.nc.Publish(interestSubject, nil)
}

// loadInterest reads the set for the first time and starts the refresher
// (called once the TOPICSPACE stream exists).
func (t *tenantState) loadInterest(ctx context.Context) error {
	si := &t.interest
	if si.loaded.Load() {
		return nil
	}
	if err := t.refreshInterest(ctx); err != nil {
		return err
	}
	si.mu.Lock()
	defer si.mu.Unlock()
	if si.loaded.Load() {
		return nil
	}
	si.loaded.Store(true)
	si.kick = make(chan struct{}, 1)
	sub, err := t.nc.Subscribe(interestSubject, func(*nats.Msg) {
		select {
		case si.kick <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	si.stop = func() { cancel(); _ = sub.Unsubscribe() }
	go func() {
		tk := time.NewTicker(interestRefresh)
		defer tk.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-tk.C:
			case <-si.kick:
			}
			c, cancel := context.WithTimeout(rctx, 10*time.Second)
			_ = t.refreshInterest(c) // on error the old set stays
			cancel()
		}
	}()
	return nil
}

// refreshInterest replaces the set with the engine's consumer list, keeping
// filters added on this node since the listing began (the listing may
// predate their consumer).
func (t *tenantState) refreshInterest(ctx context.Context) error {
	began := time.Now()
	// Asked again after apiTry (pull.go): right after the stream's
	// creation, or during an election, a request can go unanswered, and
	// the first durable publish of a new tenant on a cluster was refused
	// "context deadline exceeded" (TestSubscribeInForceAcrossNodes).
	l, err := retryAPI(ctx, t.listInterest)
	if err != nil {
		return err
	}
	filters, all, names, infoNames := l.filters, l.all, l.names, l.infoNames
	si := &t.interest
	si.mu.Lock()
	filters, all = mergeInterest(filters, all, listingComplete(names, infoNames), si.loaded.Load(), si.filters, si.all)
	for f, at := range si.local {
		if at.Before(began.Add(-time.Minute)) {
			delete(si.local, f) // long since visible in the listing
			continue
		}
		if !at.Before(began) {
			filters = append(filters, splitSubject(f))
		}
	}
	si.filters, si.all = filters, all
	si.mu.Unlock()
	si.gen.Add(1)
	return nil
}

// interestListing is one reading of the TOPICSPACE consumers.
type interestListing struct {
	filters          [][]string
	all              bool
	names, infoNames []string
}

func (t *tenantState) listInterest(ctx context.Context) (interestListing, error) {
	var l interestListing
	var filters [][]string
	all := false
	st, err := t.js.Stream(ctx, topicSpaceStream)
	if err != nil {
		return l, err
	}
	// The names come from the engine's meta layer (every consumer the
	// stream has); the infos from each consumer's leader, and in a cluster
	// one whose leader is down or busy is left out ("Did not receive all
	// consumer info results"). Comparing counts was not enough: consumers
	// created between the two requests hid a missing one (the cluster
	// soak lost 208 QoS 2 messages of a persistent session whose
	// consumer's leader had been killed while reconnecting clients made
	// new ones). A listing is complete when it has every name.
	var names []string
	nl := st.ConsumerNames(ctx)
	for n := range nl.Name() {
		names = append(names, n)
	}
	if err := nl.Err(); err != nil {
		return l, err
	}
	var infoNames []string
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		infoNames = append(infoNames, ci.Name)
		fs := ci.Config.FilterSubjects
		if ci.Config.FilterSubject != "" {
			fs = append(fs, ci.Config.FilterSubject)
		}
		if len(fs) == 0 {
			all = true
		}
		for _, f := range fs {
			filters = append(filters, splitSubject(f))
		}
	}
	if err := lister.Err(); err != nil {
		return l, err
	}
	return interestListing{filters: filters, all: all, names: names, infoNames: infoNames}, nil
}

// mergeInterest is the stored-interest set after a listing of the
// TOPICSPACE consumers: the listing's filters when it was complete. A
// partial listing — in a cluster a consumer's info comes from its leader,
// and one on a node that is down or busy is missing ("Did not receive all
// consumer info results") — only adds: dropping a filter would send
// durable messages for its consumer out live, acknowledged and never
// stored (the cluster soak lost 388 QoS 1 messages of a persistent
// session that way around a kill -9). Before the first complete listing
// (loaded false) a partial one means every durable message is stored.
func mergeInterest(listed [][]string, listedAll, complete, loaded bool, old [][]string, oldAll bool) ([][]string, bool) {
	if complete {
		return listed, listedAll
	}
	all := listedAll || oldAll || !loaded
	seen := make(map[string]bool, len(listed))
	for _, f := range listed {
		seen[strings.Join(f, ".")] = true
	}
	for _, f := range old {
		if k := strings.Join(f, "."); !seen[k] {
			seen[k] = true
			listed = append(listed, f)
		}
	}
	return listed, all
}

// listingComplete reports whether the consumer infos listed (infoNames)
// cover every consumer name the stream had (names): a consumer made after
// the names were read may be listed too, one deleted since may be missing
// (then the listing counts as partial: a stale filter only costs storing).
func listingComplete(names, infoNames []string) bool {
	got := make(map[string]bool, len(infoNames))
	for _, n := range infoNames {
		got[n] = true
	}
	for _, n := range names {
		if !got[n] {
			return false
		}
	}
	return true
}

func (t *tenantState) stopInterest() {
	si := &t.interest
	si.mu.Lock()
	stop := si.stop
	si.stop = nil
	si.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Back-pressure for durable messages that go out live: live.go.

func splitSubject(s string) []string { return strings.Split(s, ".") }
