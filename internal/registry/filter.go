package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Filters and sort fields are JSON pointers (RFC 6901) into the device's
// JSON as Hono returns it, plus "/id" for the device id.

func (f Filter) validate() error {
	if !strings.HasPrefix(f.Field, "/") {
		return fmt.Errorf("%w: filter field %q is not a JSON pointer", ErrInvalid, f.Field)
	}
	if f.Op != "" && f.Op != "eq" {
		return fmt.Errorf("%w: filter operator %q (only \"eq\")", ErrInvalid, f.Op)
	}
	var v any
	if len(f.Value) == 0 || json.Unmarshal(f.Value, &v) != nil {
		return fmt.Errorf("%w: filter %q has no valid JSON value", ErrInvalid, f.Field)
	}
	return nil
}

func (so Sort) validate() error {
	if !strings.HasPrefix(so.Field, "/") {
		return fmt.Errorf("%w: sort field %q is not a JSON pointer", ErrInvalid, so.Field)
	}
	if so.Direction != "" && so.Direction != "asc" && so.Direction != "desc" {
		return fmt.Errorf("%w: sort direction %q (asc or desc)", ErrInvalid, so.Direction)
	}
	return nil
}

// pointer resolves a JSON pointer in a decoded document.
func pointer(doc any, ptr string) (any, bool) {
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// matches reports whether a value found by a filter's pointer equals the
// filter's value: strings with '*' (any run) and '?' (one character)
// wildcards, numbers numerically, and an array when one element matches.
func matches(have, want any) bool {
	if arr, ok := have.([]any); ok {
		if _, wantArr := want.([]any); !wantArr {
			for _, e := range arr {
				if matches(e, want) {
					return true
				}
			}
			return false
		}
	}
	switch w := want.(type) {
	case string:
		h, ok := have.(string)
		return ok && wildcard(w, h)
	case float64:
		h, ok := have.(float64)
		return ok && h == w
	case bool:
		h, ok := have.(bool)
		return ok && h == w
	case nil:
		return have == nil
	default:
		a, _ := json.Marshal(have)
		b, _ := json.Marshal(want)
		return bytes.Equal(a, b)
	}
}

// wildcard matches s against a pattern with '*' and '?'.
func wildcard(p, s string) bool {
	pr, sr := []rune(p), []rune(s)
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(sr) {
		switch {
		case pi < len(pr) && (pr[pi] == '?' || pr[pi] == sr[si]):
			pi++
			si++
		case pi < len(pr) && pr[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(pr) && pr[pi] == '*' {
		pi++
	}
	return pi == len(pr)
}

// rank orders JSON values of different kinds: absent, null, false/true,
// numbers, strings, then anything else by its JSON text.
func compareValues(a, b any, aok, bok bool) int {
	kind := func(v any, ok bool) int {
		if !ok {
			return 0
		}
		switch v.(type) {
		case nil:
			return 1
		case bool:
			return 2
		case float64:
			return 3
		case string:
			return 4
		}
		return 5
	}
	ka, kb := kind(a, aok), kind(b, bok)
	if ka != kb {
		return ka - kb
	}
	switch x := a.(type) {
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case float64:
		y := b.(float64)
		switch {
		case x < y || math.IsNaN(x):
			return -1
		case x > y:
			return 1
		}
		return 0
	case string:
		return strings.Compare(x, b.(string))
	case nil:
		return 0
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Compare(ja, jb)
}

type scanned struct {
	id   string
	keys []any
	has  []bool
}

// scanDevices answers a query with filters or a sort other than by id by
// reading every device of the tenant from the bucket (a watch of the
// tenant's keys, values included), keeping only the matching ids and
// their sort keys, and then reading the page's devices again.
func (s *Store) scanDevices(ctx context.Context, tenantName string, q Query) (Page, error) {
	var gateways map[string]struct{}
	if q.IsGateway != nil {
		s.mu.RLock()
		if ti := s.index[tenantName]; ti != nil {
			gateways = make(map[string]struct{}, ti.gw.Len())
			ti.gw.Scan(func(id string) bool { gateways[id] = struct{}{}; return true })
		}
		s.mu.RUnlock()
	}
	wants := make([]any, len(q.Filters))
	for i, f := range q.Filters {
		_ = json.Unmarshal(f.Value, &wants[i])
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.devs.Watch(wctx, tenantName+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return Page{}, err
	}
	defer func() { _ = w.Stop() }()
	var found []scanned
loop:
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return Page{}, ctx.Err()
		}
		if e == nil {
			break loop
		}
		_, id, ok := splitDeviceKey(e.Key())
		if !ok || id == "" {
			continue
		}
		if q.IsGateway != nil {
			if _, gw := gateways[id]; gw != *q.IsGateway {
				continue
			}
		}
		var doc map[string]any
		if json.Unmarshal(e.Value(), &doc) != nil {
			continue
		}
		delete(doc, "inc")
		doc["id"] = id
		ok = true
		for i, f := range q.Filters {
			v, has := pointer(doc, f.Field)
			if !has || !matches(v, wants[i]) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		sc := scanned{id: id}
		for _, so := range q.Sort {
			v, has := pointer(doc, so.Field)
			sc.keys = append(sc.keys, v)
			sc.has = append(sc.has, has)
		}
		found = append(found, sc)
	}
	sort.Slice(found, func(i, j int) bool {
		a, b := found[i], found[j]
		for k, so := range q.Sort {
			c := compareValues(a.keys[k], b.keys[k], a.has[k], b.has[k])
			if so.Direction == "desc" {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		return a.id < b.id
	})
	var ids []string
	for i := q.PageOffset; i < q.PageOffset+q.PageSize && i < len(found); i++ {
		ids = append(ids, found[i].id)
	}
	result, err := s.fetchDevices(ctx, tenantName, ids)
	if err != nil {
		return Page{}, err
	}
	return Page{Total: len(found), Result: result}, nil
}

// Match reports whether a decoded JSON document (a device or a tenant as
// Hono shows it) satisfies every filter of Hono's filterJson. The device
// search uses it, and so does the /v1 tenant search.
func Match(doc any, fs []Filter) bool {
	for _, f := range fs {
		var want any
		if json.Unmarshal(f.Value, &want) != nil {
			return false
		}
		v, has := pointer(doc, f.Field)
		if !has || !matches(v, want) {
			return false
		}
	}
	return true
}

// Less orders two decoded JSON documents by Hono's sortJson, then by
// "/id".
func Less(a, b any, sorts []Sort) bool {
	for _, so := range append(sorts[:len(sorts):len(sorts)], Sort{Field: "/id"}) {
		va, aok := pointer(a, so.Field)
		vb, bok := pointer(b, so.Field)
		c := compareValues(va, vb, aok, bok)
		if c == 0 {
			continue
		}
		if so.Direction == "desc" {
			return c > 0
		}
		return c < 0
	}
	return false
}
