package serving

import (
	"bytes"
	"context"
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
	fill    sync.Mutex // held while an answer computes what the set lacks
	mu      sync.Mutex
	buckets map[int64]chunk
}

// chunk is a bucket's rows: JSON objects, comma-separated, at [start, end)
// of a block; the rows of the next bucket computed with them follow after
// one comma, so that consecutive buckets are written as one piece. An
// empty chunk is a bucket without rows.
type chunk struct {
	blk        *[]byte
	start, end int
}

// answerBody is an encoded answer in pieces, written in order (for a JSON
// answer assembled here: the head, the rows, shared with bucket sets or
// fresh, and the tail; else one piece).
type answerBody struct {
	pieces   [][]byte
	size     int
	fresh    int      // bytes not shared with a bucket set
	warnings []string // the answer's warnings (Braid-Warning)
}

func (b *answerBody) writeTo(w io.Writer) error {
	for _, p := range b.pieces {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// bodyBuilder assembles an answerBody, merging consecutive chunks of a block
// into one piece.
type bodyBuilder struct {
	body      answerBody
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
func (s *Server) answerJSON(ctx context.Context, v *logic.View, q Query, in inputs) (body *answerBody, ok bool, err error) {
	if s.cache == nil || s.opts.Views == nil || s.opts.Speed == nil || !in.posOK {
		return nil, false, nil
	}
	wm := logic.Watermark{Max: in.pos.Watermark}.At(v.Stream.AllowedLateness)
	lo, hi, end, unit, ok := bucketRanges(v, q, wm)
	if !ok {
		return nil, false, nil
	}
	final, finalKey := s.bucketSet(v, q, in, false)
	open, openKey := s.bucketSet(v, q, in, true)
	// Answers of one shape at one speed position fill their sets one at a
	// time: after a commit, the first computes the open buckets and the
	// others, waiting here, reuse them.
	open.fill.Lock()
	defer open.fill.Unlock()

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
	read := 0 // stored rows read by the spans computed
	for _, sp := range spans {
		if sp.cached {
			for b := sp.from; b < sp.to; b += unit {
				w.addChunk(chunks[(b-lo)/unit])
			}
			continue
		}
		q2 := q
		q2.From, q2.To = sp.from, sp.to
		a, err := s.compute(ctx, v, q2, in)
		if err != nil {
			return nil, false, err
		}
		if a.Cutoff != cutoff || a.Watermark != wm || len(a.Warnings) > 0 {
			return nil, false, nil // the inputs moved under us (or something to warn of): compute the answer whole
		}
		if read += a.RowsRead; read > s.maxQueryRows() {
			return nil, false, s.checkRowsRead(v, read)
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
		s.cache.grow(key, n)
	}
	s.bucketUse.WithLabelValues("reused").Add(float64(reused))
	s.bucketUse.WithLabelValues("computed").Add(float64(computed))
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
func (s *Server) bucketSet(v *logic.View, q Query, in inputs, open bool) (*bucketSet, string) {
	var b strings.Builder
	b.WriteString("buckets|")
	b.WriteString(v.Name)
	b.WriteByte('|')
	if in.ver != nil {
		b.WriteString(in.ver.ID)
	}
	b.WriteByte('|')
	if open {
		b.WriteString("open@" + strconv.FormatUint(in.pos.Seq, 10) + "/" + strconv.FormatInt(in.pos.Watermark, 10) + "|")
	}
	writeQueryShape(&b, q)
	key := b.String()
	if x, ok := s.cache.get(key); ok {
		return x.(*bucketSet), key
	}
	set := &bucketSet{buckets: map[int64]chunk{}}
	s.cache.put(key, set, 256)
	return set, key
}

// speedSnapshot is the speed cells of a view at one speed position, for
// windows from `from` on.
type speedSnapshot struct {
	from  int64
	cells []SpeedCell
}

// approxCellBytes estimates the memory of a speed cell for cache accounting.
const approxCellBytes = 200

// speedCells reads v's speed cells with window start in [from, to) and
// epoch >= minEpoch. At a known speed position the cells from `from` on
// are kept in the query cache, and reads of ranges starting there or later
// filter them: queries between two commits read Redis once. The states are
// shared: Merge only reads its inputs.
func (s *Server) speedCells(ctx context.Context, v *logic.View, from, to, minEpoch int64, in inputs) ([]SpeedCell, error) {
	if s.cache == nil || !in.posOK || in.pos.Seq == 0 {
		return s.opts.Speed.ReadCells(ctx, v, from, to, minEpoch)
	}
	key := "speed|" + v.Name + "|" + strconv.FormatUint(in.pos.Seq, 10) + "|" + strconv.FormatInt(minEpoch, 10)
	if x, ok := s.cache.get(key); ok {
		if sn := x.(*speedSnapshot); from >= sn.from {
			return sn.within(from, to), nil
		}
	}
	cells, err := s.opts.Speed.ReadCells(ctx, v, from, math.MaxInt64, minEpoch)
	if err != nil {
		return nil, err
	}
	sn := &speedSnapshot{from: from, cells: cells}
	s.cache.put(key, sn, int64(len(cells))*approxCellBytes)
	return sn.within(from, to), nil
}

func (sn *speedSnapshot) within(from, to int64) []SpeedCell {
	out := make([]SpeedCell, 0, len(sn.cells))
	for _, c := range sn.cells {
		if c.Window >= from && c.Window < to {
			out = append(out, c)
		}
	}
	return out
}
