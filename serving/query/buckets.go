package query

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/braid-data/braid/logic"
)

// Final windows do not change. The speed layer skips every event behind
// the watermark (logic.Watermark.TooLate), so a window that ended at or
// before the watermark gets no more speed cells, and its batch rows change
// only with a new batch version. A JSON answer is therefore assembled from
// encoded rows kept per bucket (a window, or a rollup step) in the query
// cache: the final buckets' rows per (view, batch version, query shape),
// the open buckets' rows per speed position as well. Only buckets not seen
// before and the partial buckets at the range's edges are computed. A
// dashboard asking for the last day of minutes merges and encodes, after
// each speed commit, the windows that are still open, not the day; between
// commits it only writes bytes.

// bucketSet holds encoded rows per bucket: of one query shape's final
// buckets at a batch version, or of its open buckets at a speed position.
type bucketSet struct {
	fill    chan struct{} // holds a token while an answer computes what the set lacks
	mu      sync.Mutex
	buckets map[int64]chunk
}

// lockFill takes the set's fill token, or returns ctx's error when ctx
// ends first.
func (set *bucketSet) lockFill(ctx context.Context) error {
	select {
	case set.fill <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (set *bucketSet) unlockFill() { <-set.fill }

// chunk is a bucket's rows: JSON objects, comma-separated, at [start, end)
// of a block; the rows of the next bucket computed with them follow after
// one comma, so that consecutive buckets are written as one piece. An
// empty chunk is a bucket without rows.
type chunk struct {
	blk        *[]byte
	start, end int
}

// Body is an encoded answer in pieces, written in order (for a JSON
// answer assembled here: the head, the rows, shared with bucket sets or
// fresh, and the tail; else one piece). It is shared with the query cache
// and other queries: read-only.
type Body struct {
	pieces   [][]byte
	size     int
	fresh    int      // bytes not shared with a bucket set
	warnings []string // the answer's warnings
}

// Len is the body's length in bytes.
func (b *Body) Len() int { return b.size }

// Warnings are the answer's warnings (JSON's "warnings"), for formats
// that carry them elsewhere too (serving's Braid-Warning headers).
func (b *Body) Warnings() []string { return b.warnings }

// WriteTo writes the body to w.
func (b *Body) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, p := range b.pieces {
		m, err := w.Write(p)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// bodyBuilder assembles a Body, merging consecutive chunks of a block
// into one piece.
type bodyBuilder struct {
	body      Body
	rows      bool    // a row was written (the next needs a comma)
	blk       *[]byte // the block the last piece is part of (nil: none)
	blkStart  int     // where the last piece starts in blk
	blkEnd    int
	lastPiece int
}

var comma = []byte{','}

func (w *bodyBuilder) add(p []byte) {
	w.body.pieces = append(w.body.pieces, p)
	w.body.size += len(p)
	w.blk = nil
}

// addFresh adds rows made for this answer.
func (w *bodyBuilder) addFresh(p []byte) {
	if len(p) == 0 {
		return
	}
	if w.rows {
		w.add(comma)
	}
	w.add(p)
	w.body.fresh += len(p)
	w.rows = true
}

// addChunk adds a bucket's rows from a bucket set.
func (w *bodyBuilder) addChunk(c chunk) {
	if c.end == c.start {
		return
	}
	if w.rows && w.blk == c.blk && w.blkEnd+1 == c.start {
		w.body.size += c.end - w.blkEnd
		w.blkEnd = c.end
		w.body.pieces[w.lastPiece] = (*c.blk)[w.blkStart:w.blkEnd]
		return
	}
	if w.rows {
		w.add(comma)
	}
	w.add((*c.blk)[c.start:c.end])
	w.blk, w.blkStart, w.blkEnd, w.lastPiece = c.blk, c.start, c.end, len(w.body.pieces)-1
	w.rows = true
}

// maxFrozenBuckets bounds the buckets one query walks on this path; longer
// ranges of small buckets are computed whole.
const maxFrozenBuckets = 200_000

// maxComputeRuns bounds the ranges computed for one answer: more runs of
// missing buckets than this are computed as one range.
const maxComputeRuns = 8

// bucketRanges returns the whole buckets of q's range: starts in
// [lo, end), unit apart, of which those in [lo, hi) are final at watermark.
func bucketRanges(v *logic.View, q Query, watermark int64) (lo, hi, end, unit int64, ok bool) {
	if q.All || q.Order >= 0 || q.Limit > 0 || q.To <= q.From {
		return 0, 0, 0, 0, false
	}
	size := v.Window.Size.Milliseconds()
	vstep := v.Window.Step().Milliseconds()
	if q.Step == 0 || q.Step == vstep {
		// One row per window: a window is in the answer when its start is
		// in [From, To), final when it ends at or before the watermark.
		unit = vstep
		lo, end = ceilTo(q.From, unit), ceilTo(q.To, unit)
		hi = floorDiv(watermark-size, unit)*unit + unit
	} else {
		// Rollup buckets [b, b+Step): whole when inside [From, To), final
		// when they end at or before the watermark.
		unit = q.Step
		lo, end = ceilTo(q.From, unit), floorDiv(q.To, unit)*unit
		hi = floorDiv(watermark, unit) * unit
	}
	if watermark <= 0 {
		hi = lo
	}
	hi = max(lo, min(hi, end))
	if end <= lo || (end-lo)/unit > maxFrozenBuckets {
		return 0, 0, 0, 0, false
	}
	return lo, hi, end, unit, true
}

// span is a part of an answer's range: computed (and kept in set, when
// set is not nil) or taken from the bucket sets (cached).
type span struct {
	from, to int64
	set      *bucketSet
	final    bool // set holds final buckets: keep only rows marked final
	cached   bool
}

// answerJSON assembles q's JSON answer from the bucket sets, computing
// what they lack (ok=false: q does not fit this path; the caller computes
// it whole).
func (e *Engine) answerJSON(ctx context.Context, v *logic.View, q Query, in inputs) (body *Body, ok bool, err error) {
	if e.cache == nil || e.views == nil || (e.speed == nil && v.Tier == logic.TierLive) || !in.posOK {
		return nil, false, nil
	}
	wm := Watermark(v, in.state, in.pos)
	lo, hi, end, unit, ok := bucketRanges(v, q, wm)
	if !ok {
		return nil, false, nil
	}
	final, finalKey := e.bucketSet(v, q, in, false)
	open, openKey := e.bucketSet(v, q, in, true)
	// Answers of one shape at one speed position fill their sets one at a
	// time: after a commit, the first computes the open buckets and the
	// others, waiting here, reuse them.
	if err := open.lockFill(ctx); err != nil {
		return nil, false, err
	}
	defer open.unlockFill()
	// The budget bounds what this answer reads and computes; the buckets
	// taken from the sets cost it nothing.
	bud := e.newBudget(v.Name)

	// Plan: [From, lo) computed; each whole bucket from its set, or in a
	// run of missing ones computed and kept; [end, To) computed.
	var spans []span
	if q.From < lo {
		spans = append(spans, span{from: q.From, to: lo})
	}
	chunks := make([]chunk, (end-lo)/unit)
	runs := 0
	var reused int64
	for _, part := range []struct {
		set        *bucketSet
		from, to   int64
		finalRange bool
	}{{final, lo, hi, true}, {open, hi, end, false}} {
		part.set.mu.Lock()
		for b := part.from; b < part.to; b += unit {
			if c, found := part.set.buckets[b]; found {
				chunks[(b-lo)/unit] = c
				reused++
				if n := len(spans); n > 0 && spans[n-1].cached {
					spans[n-1].to = b + unit
				} else {
					spans = append(spans, span{from: b, to: b + unit, cached: true})
				}
				continue
			}
			if n := len(spans); n > 0 && spans[n-1].set == part.set && spans[n-1].to == b {
				spans[n-1].to = b + unit
				continue
			}
			spans = append(spans, span{from: b, to: b + unit, set: part.set, final: part.finalRange})
			runs++
		}
		part.set.mu.Unlock()
	}
	if q.To > end {
		spans = append(spans, span{from: end, to: q.To})
	}
	if runs > maxComputeRuns {
		spans = mergeMissingRuns(spans)
	}

	cutoff := int64(0)
	if vv := in.state.Batch; vv != nil && vv.Cutoff > 0 {
		cutoff = vv.Cutoff
	}
	var w bodyBuilder
	var head bytes.Buffer
	writeAnswerHead(&head, &answer{View: v, Query: q, Cutoff: cutoff, Watermark: wm})
	w.add(head.Bytes())
	grown := map[*bucketSet]int64{}
	var computed int64
	for _, sp := range spans {
		if sp.cached {
			for b := sp.from; b < sp.to; b += unit {
				w.addChunk(chunks[(b-lo)/unit])
			}
			continue
		}
		q2 := q
		q2.From, q2.To = sp.from, sp.to
		a, err := e.compute(ctx, v, q2, in, bud)
		if err != nil {
			return nil, false, err
		}
		if a.Cutoff != cutoff || a.Watermark != wm || len(a.Warnings) > 0 {
			return nil, false, nil // the inputs moved under us (or something to warn of): compute the answer whole
		}
		out := bytes.NewBuffer(make([]byte, 0, 64+len(a.Rows)*(96+24*(len(v.Measures)+len(q.GroupBy)))))
		enc := newRowEncoder(a)
		type extent struct{ start, end int }
		var kept map[int64]extent // bucket -> its rows in out
		if sp.set != nil {
			kept = make(map[int64]extent)
		}
		for i := 0; i < len(a.Rows); {
			bucket := floorDiv(a.Rows[i].Window, unit) * unit
			start := out.Len()
			j := i
			for ; j < len(a.Rows) && a.Rows[j].Window < bucket+unit; j++ {
				if j > i {
					out.WriteByte(',')
				}
				enc.row(out, &a.Rows[j])
				if sp.final && !a.Rows[j].Final {
					kept = nil // not final after all: keep nothing
				}
			}
			if kept != nil {
				kept[bucket] = extent{start, out.Len()}
			}
			if j < len(a.Rows) {
				out.WriteByte(',')
			}
			i = j
		}
		all := out.Bytes()
		w.addFresh(all)
		if kept == nil {
			continue
		}
		blk := &all
		sp.set.mu.Lock()
		for b := sp.from; b < sp.to; b += unit {
			c := chunk{blk: blk} // empty
			if x, found := kept[b]; found {
				c.start, c.end = x.start, x.end
			}
			if _, had := sp.set.buckets[b]; !had {
				sp.set.buckets[b] = c
				grown[sp.set] += int64(c.end-c.start) + 64
				computed++
			}
		}
		sp.set.mu.Unlock()
	}
	w.add([]byte("]}\n"))
	for set, n := range grown {
		key := finalKey
		if set == open {
			key = openKey
		}
		e.cache.grow(key, n)
	}
	e.bucketUse.WithLabelValues("reused").Add(float64(reused))
	e.bucketUse.WithLabelValues("computed").Add(float64(computed))
	return &w.body, true, nil
}

// mergeMissingRuns turns every span from the first missing run to the
// last into one computed span, keeping nothing (so many runs are seen only
// when cached buckets were evicted one by one: compute the range again).
func mergeMissingRuns(spans []span) []span {
	first, last := -1, -1
	for i, sp := range spans {
		if sp.set != nil {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	out := append([]span{}, spans[:first]...)
	out = append(out, span{from: spans[first].from, to: spans[last].to})
	return append(out, spans[last+1:]...)
}

// bucketSet returns (making it) the set of q's shape at in's batch
// version: of final buckets, or (open) of open buckets at in's speed
// position; and its cache key.
func (e *Engine) bucketSet(v *logic.View, q Query, in inputs, open bool) (*bucketSet, string) {
	var b strings.Builder
	b.WriteString("buckets|")
	b.WriteString(v.Name)
	b.WriteByte('|')
	if in.ver != nil {
		b.WriteString(in.ver.ID)
	}
	b.WriteByte('|')
	if open {
		b.WriteString("open@" + in.pos.Seqs() + "/" + strconv.FormatInt(in.pos.Watermark, 10) + "|")
	}
	writeQueryShape(&b, q)
	key := b.String()
	if x, ok := e.cache.get(key); ok {
		return x.(*bucketSet), key
	}
	set := &bucketSet{fill: make(chan struct{}, 1), buckets: map[int64]chunk{}}
	e.cache.put(key, set, 256)
	return set, key
}

// speedSnapshot is the speed cells of a view at one speed position, for
// windows in [from, to).
type speedSnapshot struct {
	from, to int64
	cells    []SpeedCell
}

// approxCellBytes estimates the memory of a speed cell for cache
// accounting, besides 8 bytes per numeric slot (a SpeedCell, its group,
// its share of the slice; measured with heap profiles).
const approxCellBytes = 240

// speedCells reads v's speed cells with window start in [from, to) and
// epoch >= minEpoch, counting them in b. At a known speed position the
// cells from `from` on are read once for every query asking meanwhile,
// and kept in the query cache: reads of ranges starting there or later
// filter them, so queries between two commits read Redis once. When more
// cells than one answer may read lie beyond `to`, the range alone is read
// (and not kept). The states are shared: Merge only reads its inputs.
func (e *Engine) speedCells(ctx context.Context, v *logic.View, from, to, minEpoch int64, in inputs, b *budget) ([]SpeedCell, error) {
	if e.cache == nil || !in.posOK || in.pos.Seq == 0 {
		var cells []SpeedCell
		err := e.speed.ReadCells(ctx, v, from, to, minEpoch, func(c SpeedCell) error {
			cells = append(cells, c)
			return b.addCells(1)
		})
		if err != nil {
			return nil, err
		}
		return cells, nil
	}
	key := "speed|" + v.Name + "|" + in.pos.Seqs() + "|" + strconv.FormatInt(minEpoch, 10)
	if x, ok := e.cache.get(key); ok {
		if sn := x.(*speedSnapshot); from >= sn.from && to <= sn.to {
			return sn.take(from, to, b)
		}
	}
	start := strconv.FormatInt(from, 10)
	sn, err := e.snapshots.do(ctx, key+"|"+start, func(ctx context.Context) (*speedSnapshot, error) {
		return e.readSnapshot(ctx, v, key, from, math.MaxInt64, to, minEpoch)
	})
	var capped *cellsCapped
	if errors.As(err, &capped) {
		if capped.inRange && to >= capped.upTo {
			return nil, b.tooManyCells() // [from, to) holds them
		}
		sn, err = e.snapshots.do(ctx, key+"|"+start+"|"+strconv.FormatInt(to, 10), func(ctx context.Context) (*speedSnapshot, error) {
			return e.readSnapshot(ctx, v, key, from, to, to, minEpoch)
		})
		if errors.As(err, &capped) {
			return nil, b.tooManyCells()
		}
	}
	if err != nil {
		return nil, err
	}
	return sn.take(from, to, b)
}

// readSnapshot reads v's speed cells of windows in [from, to), stopping
// with a *cellsCapped past as many as one answer may read (upTo: the end
// of the range of the query asking); cells read to the end are kept in the
// query cache under key.
func (e *Engine) readSnapshot(ctx context.Context, v *logic.View, key string, from, to, upTo, minEpoch int64) (*speedSnapshot, error) {
	e.computing.Inc()
	defer e.computing.Dec()
	limit := e.maxCells
	var cells []SpeedCell
	inRange := int64(0)
	err := e.speed.ReadCells(ctx, v, from, to, minEpoch, func(c SpeedCell) error {
		cells = append(cells, c)
		if c.Window < upTo {
			inRange++
		}
		if limit > 0 && int64(len(cells)) > limit {
			return &cellsCapped{upTo: upTo, inRange: inRange > limit}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sn := &speedSnapshot{from: from, to: to, cells: cells}
	if to == math.MaxInt64 {
		e.cache.put(key, sn, int64(len(cells))*int64(approxCellBytes+8*v.NumSlots))
	}
	return sn, nil
}

// take returns the cells of windows in [from, to), counted in b: the
// snapshot's own slice when they are all of them (Merge only reads it).
func (sn *speedSnapshot) take(from, to int64, b *budget) ([]SpeedCell, error) {
	n := 0
	for i := range sn.cells {
		if w := sn.cells[i].Window; w >= from && w < to {
			n++
		}
	}
	if err := b.addCells(n); err != nil {
		return nil, err
	}
	if n == len(sn.cells) {
		return sn.cells, nil
	}
	out := make([]SpeedCell, 0, n)
	for _, c := range sn.cells {
		if c.Window >= from && c.Window < to {
			out = append(out, c)
		}
	}
	return out, nil
}
