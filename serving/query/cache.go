package query

import (
	"bytes"
	"container/list"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/braid-data/braid/logic"
)

// byteLRU is a least-recently-used map bounded by the bytes its entries
// say they hold. Entries can grow after they are put (grow); the oldest
// entries go when the total passes the bound. Safe for concurrent use.
type byteLRU struct {
	mu   sync.Mutex
	max  int64
	used int64
	ll   *list.List // of *lruEntry, most recent first
	m    map[string]*list.Element
}

type lruEntry struct {
	key  string
	size int64
	val  any
}

func newByteLRU(max int64) *byteLRU {
	return &byteLRU{max: max, ll: list.New(), m: map[string]*list.Element{}}
}

func (c *byteLRU) get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*lruEntry).val, true
	}
	return nil, false
}

// put stores val under key (replacing any entry there). An entry larger
// than half the bound is not kept: it would empty the cache for one answer.
func (c *byteLRU) put(key string, val any, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		c.removeLocked(el)
	}
	if size > c.max/2 {
		return
	}
	c.m[key] = c.ll.PushFront(&lruEntry{key: key, size: size, val: val})
	c.used += size
	c.evictLocked()
}

// grow adds delta bytes to key's entry (when it is still cached).
func (c *byteLRU) grow(key string, delta int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		el.Value.(*lruEntry).size += delta
		c.used += delta
		c.ll.MoveToFront(el)
		c.evictLocked()
	}
}

func (c *byteLRU) removeLocked(el *list.Element) {
	e := el.Value.(*lruEntry)
	c.ll.Remove(el)
	delete(c.m, e.key)
	c.used -= e.size
}

func (c *byteLRU) evictLocked() {
	for c.used > c.max && c.ll.Len() > 0 {
		c.removeLocked(c.ll.Back())
	}
}

// cachedAnswer is an answer and its encodings (made on first use).
type cachedAnswer struct {
	a    *answer
	grow func(int64) // accounts an encoding's bytes in the cache (nil: not cached)
	mu   sync.Mutex
	enc  map[string][]byte
}

// approxRowBytes estimates the memory of a result row for cache
// accounting, besides 16 bytes per measure (a ResultRow, its values, its
// share of the merged rows it was made from; measured with heap profiles).
const approxRowBytes = 320

// cacheKey normalizes a query: equal keys give equal answers at the same
// batch version and speed position (StreamSpeed.Seqs).
func cacheKey(v *logic.View, q Query, version, seqs string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%s|", v.Name, version, seqs)
	writeQueryShape(&b, q)
	fmt.Fprintf(&b, "%d|%d|%t|%d|o%d|", q.From, q.To, q.Desc, q.Limit, q.Order)
	return b.String()
}

// writeQueryShape writes what, besides the range and the order, decides
// an answer's rows: the rollup step, the kept dimensions and the filters.
func writeQueryShape(b *strings.Builder, q Query) {
	fmt.Fprintf(b, "%t|%d|", q.All, q.Step)
	if q.Dims == nil {
		b.WriteString("d*|")
	} else {
		fmt.Fprintf(b, "d%v|", q.Dims)
	}
	fs := slices.Clone(q.Filters)
	slices.SortFunc(fs, func(x, y Filter) int { return x.Dim - y.Dim })
	for _, f := range fs {
		vals := slices.Clone(f.Values)
		slices.Sort(vals)
		vals = slices.Compact(vals)
		fmt.Fprintf(b, "f%d=%q|", f.Dim, vals)
	}
}

// lookupWith returns the answer of q at inputs read: from the cache when
// its batch version and speed position were seen before, else computed
// (and cached). Queries of one answer (the same view, parameters, batch
// version and speed position) asking while it is computed share that
// computation, and it stops when none of them waits any more.
func (e *Engine) lookupWith(ctx context.Context, v *logic.View, q Query, in inputs) (*cachedAnswer, error) {
	key := e.answerKey(v, q, in)
	if key == "" {
		a, err := e.compute(ctx, v, q, in, e.newBudget(v.Name))
		if err != nil {
			return nil, err
		}
		return &cachedAnswer{a: a}, nil
	}
	if x, ok := e.cache.get(key); ok {
		e.cacheLookups.WithLabelValues("hit").Inc()
		return x.(*cachedAnswer), nil
	}
	e.cacheLookups.WithLabelValues("miss").Inc()
	return e.answers.do(ctx, key, func(ctx context.Context) (*cachedAnswer, error) {
		a, err := e.compute(ctx, v, q, in, e.newBudget(v.Name))
		if err != nil {
			return nil, err
		}
		ca := &cachedAnswer{a: a}
		ca.grow = func(n int64) { e.cache.grow(key, n) }
		e.cache.put(key, ca, int64(len(a.Rows))*int64(approxRowBytes+16*len(v.Measures)))
		return ca, nil
	})
}

// answerKey is the cache key of q's answer at in ("": not cacheable).
func (e *Engine) answerKey(v *logic.View, q Query, in inputs) string {
	if e.cache == nil || !in.posOK {
		return ""
	}
	ver := ""
	if in.ver != nil {
		ver = in.ver.ID
	}
	return cacheKey(v, q, ver, in.pos.Seqs())
}

// encoded renders the answer in a format (json, csv, arrow), once.
func (e *cachedAnswer) encoded(format string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b, ok := e.enc[format]; ok {
		return b, nil
	}
	var b []byte
	switch format {
	case "csv":
		var buf bytes.Buffer
		if err := writeCSV(&buf, e.a); err != nil {
			return nil, err
		}
		b = buf.Bytes()
	case "arrow":
		var err error
		if b, err = encodeArrow(e.a); err != nil {
			return nil, err
		}
	case "rows": // the rows alone, as a JSON array (live snapshots)
		b = encodeRows(e.a)
	default:
		b = encodeAnswer(e.a)
	}
	if e.enc == nil {
		e.enc = map[string][]byte{}
	}
	e.enc[format] = b
	if e.grow != nil {
		e.grow(int64(len(b)))
	}
	return b, nil
}
