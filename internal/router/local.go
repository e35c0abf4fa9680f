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
		n := x.root
		for i, t := range toks {
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
			if n == nil {
				break
			}
		}
		if n != nil {
			n.here = without(n.here, c)
		}
	}
	delete(x.subs, c)
	x.cache = nil
	// Empty nodes stay: filters come back (reconnecting clients), and a
	// node is a few words.
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
