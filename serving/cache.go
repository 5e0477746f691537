package serving

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

// maxCachedRows: larger answers are not cached (they would crowd out the
// rest and are cheap to recompute relative to their transfer).
const maxCachedRows = 50_000

// answerCache keeps recent answers (LRU by count). Keys include the batch
// version id and the stream's speed position, so nothing is ever
// invalidated explicitly: a commit or a batch run changes the key.
type answerCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *cachedAnswer, most recent first
	m   map[string]*list.Element
}

// cachedAnswer is an answer and its encodings (made on first use).
type cachedAnswer struct {
	key string
	a   *answer
	mu  sync.Mutex
	enc map[string][]byte
}

func newAnswerCache(max int) *answerCache {
	return &answerCache{max: max, ll: list.New(), m: map[string]*list.Element{}}
}

func (c *answerCache) get(key string) *cachedAnswer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*cachedAnswer)
	}
	return nil
}

func (c *answerCache) put(e *cachedAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[e.key]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.m[e.key] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(*cachedAnswer).key)
	}
}

// cacheKey normalizes a query: equal keys give equal answers at the same
// batch version and speed position.
func cacheKey(v *logic.View, q Query, version string, seq uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%d|%d|%d|%t|%d|%t|%d|", v.Name, version, seq, q.From, q.To, q.All, q.Step, q.Desc, q.Limit)
	fmt.Fprintf(&b, "o%d|", q.Order)
	if q.Dims == nil {
		b.WriteString("d*|")
	} else {
		fmt.Fprintf(&b, "d%v|", q.Dims)
	}
	fs := slices.Clone(q.Filters)
	slices.SortFunc(fs, func(x, y Filter) int { return x.Dim - y.Dim })
	for _, f := range fs {
		vals := slices.Clone(f.Values)
		slices.Sort(vals)
		vals = slices.Compact(vals)
		fmt.Fprintf(&b, "f%d=%q|", f.Dim, vals)
	}
	return b.String()
}

// lookup returns the answer of q: from the cache when its batch version and
// speed position were seen before, else computed (and cached).
func (s *Server) lookup(ctx context.Context, v *logic.View, q Query) (*cachedAnswer, error) {
	in, err := s.readInputs(ctx, v)
	if err != nil {
		return nil, err
	}
	key := ""
	if s.cache != nil && in.posOK {
		ver := ""
		if in.ver != nil {
			ver = in.ver.ID
		}
		key = cacheKey(v, q, ver, in.pos.Seq)
		if e := s.cache.get(key); e != nil {
			s.cacheLookups.WithLabelValues("hit").Inc()
			return e, nil
		}
		s.cacheLookups.WithLabelValues("miss").Inc()
	}
	a, err := s.compute(ctx, v, q, in)
	if err != nil {
		return nil, err
	}
	e := &cachedAnswer{key: key, a: a}
	if key != "" && len(a.Rows) <= maxCachedRows {
		s.cache.put(e)
	}
	return e, nil
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
	default:
		b = encodeAnswer(e.a)
	}
	if e.enc == nil {
		e.enc = map[string][]byte{}
	}
	e.enc[format] = b
	return b, nil
}
