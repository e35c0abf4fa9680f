package router

import (
	"sync"
)

// Local delivery of live messages.
//
// A live message (multicast, topic space on t.<name>) used to reach the
// consumers of this node the long way: encoded, written to the engine over
// the in-process connection, matched by the NATS server, written back per
// subscription, parsed by the client library, handed to the
// subscription's goroutine and decoded again, once per consumer. The
// router now delivers it to this node's consumers itself, from the
// publishing goroutine, with the decoded message; it still publishes it to
// the engine for the other nodes, on a connection with NoEcho (tenantState.live)
// on which the live consumers also listen, so the engine does not send
// this node's own publishes back to it.
//
// liveIndex maps t.-subject filters to consumers: a token trie ("*" one
// token, ">" the rest, as NATS) with a per-subject cache of the result,
// dropped whenever a consumer comes or goes.
type liveIndex struct {
	mu    sync.RWMutex
	root  *indexNode               // guarded by mu
	cache map[string][]*Consumer   // subject → consumers; guarded by mu
	subs  map[*Consumer][][]string // consumer → its filters (tokenized), for removal; guarded by mu
}

type indexNode struct {
	next map[string]*indexNode
	star *indexNode
	rest []*Consumer // filters ending in ">"
	here []*Consumer // filters ending at this node
}

// maxIndexCache bounds the per-subject cache; it is dropped when full
// (devices publishing to their own topics would otherwise grow it without
// end).
const maxIndexCache = 4096

func (x *liveIndex) add(c *Consumer, filter string) {
	toks := splitSubject(filter)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.root == nil {
		x.root = &indexNode{}
		x.subs = map[*Consumer][][]string{}
	}
	n := x.root
	for i, t := range toks {
		if t == ">" && i == len(toks)-1 {
			n.rest = append(n.rest, c)
			x.subs[c] = append(x.subs[c], toks)
			x.cache = nil
			return
		}
		var child *indexNode
		if t == "*" {
			if n.star == nil {
				n.star = &indexNode{}
			}
			child = n.star
		} else {
			if n.next == nil {
				n.next = map[string]*indexNode{}
			}
			if child = n.next[t]; child == nil {
				child = &indexNode{}
				n.next[t] = child
			}
		}
		n = child
	}
	n.here = append(n.here, c)
	x.subs[c] = append(x.subs[c], toks)
	x.cache = nil
}

func (x *liveIndex) remove(c *Consumer) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, toks := range x.subs[c] {
		x.removeFilterLocked(c, toks)
	}
	delete(x.subs, c)
	if len(x.subs) == 0 {
		x.subs = nil // a map keeps its buckets after deletes
		x.root = nil
	}
	x.cache = nil
}

// removeFilterLocked removes one filter of c and then the nodes on its path
// that were left empty, deepest first: a device fleet subscribing to its
// own topics (devices/<id>/cmd) came and went by the million and, with the
// empty nodes kept, the trie grew with every name ever subscribed. The
// cost is only on unsubscribe; matching is unchanged. x.mu held.
func (x *liveIndex) removeFilterLocked(c *Consumer, toks []string) {
	path := make([]*indexNode, 0, len(toks)+1)
	n := x.root
	for i, t := range toks {
		if n == nil {
			return
		}
		path = append(path, n)
		if t == ">" && i == len(toks)-1 {
			n.rest = without(n.rest, c)
			n = nil
			break
		}
		if t == "*" {
			n = n.star
		} else {
			n = n.next[t]
		}
	}
	if n != nil {
		n.here = without(n.here, c)
		path = append(path, n)
	}
	// path[i+1] is the child of path[i] by toks[i].
	for i := len(path) - 1; i > 0; i-- {
		child := path[i]
		if !child.empty() {
			return
		}
		parent, t := path[i-1], toks[i-1]
		if t == "*" {
			parent.star = nil
		} else {
			delete(parent.next, t)
			if len(parent.next) == 0 {
				parent.next = nil
			}
		}
	}
}

func (n *indexNode) empty() bool {
	return len(n.here) == 0 && len(n.rest) == 0 && n.star == nil && len(n.next) == 0
}

// size counts the trie's nodes (tests).
func (x *liveIndex) size() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var count func(n *indexNode) int
	count = func(n *indexNode) int {
		if n == nil {
			return 0
		}
		k := 1 + count(n.star)
		for _, c := range n.next {
			k += count(c)
		}
		return k
	}
	return count(x.root)
}

func without(cs []*Consumer, c *Consumer) []*Consumer {
	out := cs[:0:0]
	for _, x := range cs {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}

// match returns the consumers whose filters match subject. The slice is
// shared and must not be modified.
func (x *liveIndex) match(subject string) []*Consumer {
	x.mu.RLock()
	if x.root == nil {
		x.mu.RUnlock()
		return nil
	}
	cs, ok := x.cache[subject]
	x.mu.RUnlock()
	if ok {
		return cs
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.root == nil {
		return nil
	}
	cs = matchNode(x.root, splitSubject(subject), nil)
	if x.cache == nil || len(x.cache) >= maxIndexCache {
		x.cache = map[string][]*Consumer{}
	}
	x.cache[subject] = cs
	return cs
}

func matchNode(n *indexNode, toks []string, out []*Consumer) []*Consumer {
	if len(toks) == 0 {
		return append(out, n.here...)
	}
	out = append(out, n.rest...)
	if c := n.next[toks[0]]; c != nil {
		out = matchNode(c, toks[1:], out)
	}
	if n.star != nil {
		out = matchNode(n.star, toks[1:], out)
	}
	return out
}
