package query

import (
	"bytes"
	"context"
	"math"
	"sync"
	"time"

	"github.com/braid-data/braid/logic"
)

// LiveFeed is one live query — a view and its parameters — and what its
// clients share: it is recomputed once per change (a commit of the view's
// stream, a new batch version; at most once per liveCoalesce), through the
// answer cache and its shared computations, whatever the number of
// clients; each client then sends what changed since what it was sent.
// Its computations run on a context that ends when its last client leaves
// (hub.leave).
//
// What changed is kept per row of the current answer as two stamps: the
// generation (one per answer taken) at which the row last changed and at
// which it became final. A client that was sent generation g is sent the
// rows changed after g, as `final` those that became final after g, and
// every client at g is sent the same bytes (liveDiff), made once. A slow
// client skips generations and is still sent every change. The feed holds
// one answer and 16 bytes per row, not a copy per client.
type LiveFeed struct {
	e      *Engine
	key    string
	v      *logic.View
	q      Query
	ctx    context.Context
	cancel context.CancelFunc
	poke   chan struct{} // capacity 1: pending pokes coalesce

	clients int // guarded by the hub's lock

	mu    sync.Mutex
	st    LiveState
	diffs map[uint64]*liveDiff // diffs to st.Gen, by the generation they start from
}

// LiveState is a live query's latest answer; it is replaced, never
// changed, so a client reads it without the lock.
type LiveState struct {
	Gen     uint64        // answers taken (0: none yet)
	Err     error         // the last computation's error (nil when it succeeded)
	ErrGen  uint64        // errors so far: each is sent once
	ans     *cachedAnswer // the answer at Gen
	ansKey  string        // its cache key ("": not cacheable)
	stamps  []rowStamp    // per row of ans.a.Rows
	changed chan struct{} // closed when the state is replaced
}

// rowStamp: the generation at which a row last changed, and at which it
// became final (0: not final).
type rowStamp struct{ changed, final uint64 }

// liveDiff is the data of a client's `rows` and `final` events from one
// generation to the next, made once.
type liveDiff struct {
	once        sync.Once
	rows, final []byte
}

func newLiveFeed(e *Engine, key string, v *logic.View, q Query) *LiveFeed {
	ctx, cancel := context.WithCancel(e.bgCtx)
	return &LiveFeed{e: e, key: key, v: v, q: q, ctx: ctx, cancel: cancel, poke: make(chan struct{}, 1),
		st: LiveState{changed: make(chan struct{})}}
}

// run recomputes the live query at once, then after every poke (at most
// once per liveCoalesce), until its last client leaves.
func (f *LiveFeed) run() {
	last := time.Time{}
	for {
		select {
		case <-f.poke:
		default:
		}
		last = time.Now()
		f.refresh()
		select {
		case <-f.ctx.Done():
			return
		case <-f.poke:
		}
		if wait := liveCoalesce - time.Since(last); wait > 0 {
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// refresh takes the live query's answer at the current inputs: nothing
// when they have not moved, else the answer (from the cache, a
// computation running for another query, or a new one).
func (f *LiveFeed) refresh() {
	e, ctx := f.e, f.ctx
	in, err := e.readInputs(ctx, f.v)
	if ctx.Err() != nil {
		return // the last client left: compute nothing for nobody
	}
	key := ""
	var ca *cachedAnswer
	if err == nil {
		key = e.answerKey(f.v, f.q, in)
		f.mu.Lock()
		same := key != "" && key == f.st.ansKey && f.st.Err == nil
		f.mu.Unlock()
		if same {
			return
		}
		ca, err = e.lookupWith(ctx, f.v, f.q, in)
	}
	if ctx.Err() != nil {
		return // the last client left
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.changed = make(chan struct{})
	if err != nil {
		e.logger.Warn("live query failed", "view", f.v.Name, "err", err)
		st.Err = err
		st.ErrGen++
	} else {
		st.Gen++
		st.stamps = stamp(f.q, f.st.ans, f.st.stamps, ca, st.Gen)
		st.ans, st.ansKey, st.Err = ca, key, nil
		f.diffs = map[uint64]*liveDiff{}
	}
	close(f.st.changed)
	f.st = st
}

// Poll returns the live query's state, and whether a client that was sent
// gen and errGen has nothing new in it (wait on its Changed channel).
func (f *LiveFeed) Poll(gen, errGen uint64) (LiveState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, f.st.Gen == gen && f.st.ErrGen == errGen
}

// Next waits for a state newer than gen and errGen; false when ctx (or the
// live query) ends first.
func (f *LiveFeed) Next(ctx context.Context, gen, errGen uint64) (LiveState, bool) {
	for {
		st, wait := f.Poll(gen, errGen)
		if !wait {
			return st, true
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return st, false
		case <-f.ctx.Done():
			return st, false
		}
	}
}

// Changed is closed when a newer state replaces st.
func (st LiveState) Changed() <-chan struct{} { return st.changed }

// Done is closed when the live query ends (its last client left, or the
// engine closed).
func (f *LiveFeed) Done() <-chan struct{} { return f.ctx.Done() }

// Snapshot is the data of a `snapshot` event: every row of the answer at
// st, as a JSON array (made once, shared by every client).
func (st LiveState) Snapshot() ([]byte, error) { return st.ans.encoded("rows") }

// Version is the batch version the answer at st was computed from ("":
// none).
func (st LiveState) Version() string { return st.ans.a.Version }

// BatchEvent is the data of a `batch` event for the answer at st:
// {"version","batch_cutoff"}.
func (st LiveState) BatchEvent() []byte {
	var b bytes.Buffer
	b.WriteString(`{"version":`)
	writeStr(&b, st.ans.a.Version)
	b.WriteString(`,"batch_cutoff":`)
	writeTimeOrNull(&b, st.ans.a.Cutoff)
	b.WriteByte('}')
	return b.Bytes()
}

// Diff returns the data of the `rows` and `final` events (JSON arrays,
// "[]" when nothing changed) for a client that was sent generation from,
// up to st; made once for all the clients at from.
func (f *LiveFeed) Diff(st LiveState, from uint64) (rows, final []byte) {
	d := f.diff(st, from)
	return d.rows, d.final
}

// diff returns the events' data for a client that was sent generation
// from, up to st (made once for all the clients at from).
func (f *LiveFeed) diff(st LiveState, from uint64) *liveDiff {
	f.mu.Lock()
	d := &liveDiff{}
	if f.st.Gen == st.Gen {
		if x := f.diffs[from]; x != nil {
			d = x
		} else {
			f.diffs[from] = d
		}
	}
	f.mu.Unlock()
	d.once.Do(func() {
		a := st.ans.a
		enc := newRowEncoder(a)
		var rows, final bytes.Buffer
		rows.WriteByte('[')
		final.WriteByte('[')
		for i := range a.Rows {
			sp := st.stamps[i]
			if sp.changed <= from {
				continue
			}
			out := &rows
			if sp.final > from {
				out = &final
			}
			if out.Len() > 1 {
				out.WriteByte(',')
			}
			enc.row(out, &a.Rows[i])
		}
		rows.WriteByte(']')
		final.WriteByte(']')
		d.rows, d.final = rows.Bytes(), final.Bytes()
	})
	return d
}

// stamp returns the stamps of next's rows at generation gen: a row equal
// to its row in prev (same window and group) keeps its stamps, others
// changed at gen; a row final now and not in prev (or not final there)
// became final at gen.
func stamp(q Query, prev *cachedAnswer, prevStamps []rowStamp, next *cachedAnswer, gen uint64) []rowStamp {
	rows := next.a.Rows
	out := make([]rowStamp, len(rows))
	fresh := func(i int) {
		out[i].changed = gen
		if rows[i].Final {
			out[i].final = gen
		}
	}
	match := func(i, j int) {
		old, cur := &prev.a.Rows[j], &rows[i]
		switch {
		case sameRow(old, cur):
			out[i] = prevStamps[j]
		case cur.Final && old.Final:
			out[i] = rowStamp{changed: gen, final: prevStamps[j].final}
		default:
			fresh(i)
		}
	}
	if prev == nil {
		for i := range rows {
			fresh(i)
		}
		return out
	}
	old := prev.a.Rows
	if q.Order < 0 {
		// Both sorted by window, then group: merge.
		j := 0
		for i := range rows {
			for j < len(old) && rowBefore(&old[j], &rows[i]) {
				j++
			}
			if j < len(old) && old[j].Window == rows[i].Window && old[j].key == rows[i].key {
				match(i, j)
				j++
				continue
			}
			fresh(i)
		}
		return out
	}
	type rk struct {
		w int64
		g string
	}
	idx := make(map[rk]int, len(old))
	for j := range old {
		idx[rk{old[j].Window, old[j].key}] = j
	}
	for i := range rows {
		if j, ok := idx[rk{rows[i].Window, rows[i].key}]; ok {
			match(i, j)
			continue
		}
		fresh(i)
	}
	return out
}

func rowBefore(a, b *ResultRow) bool {
	if a.Window != b.Window {
		return a.Window < b.Window
	}
	return a.key < b.key
}

// sameRow reports whether two rows of one window and group render alike.
func sameRow(a, b *ResultRow) bool {
	if a.Source != b.Source || a.Exact != b.Exact || a.Final != b.Final || len(a.Values) != len(b.Values) {
		return false
	}
	for i := range a.Values {
		if !sameValue(a.Values[i], b.Values[i]) {
			return false
		}
	}
	return true
}

func sameValue(x, y any) bool {
	switch a := x.(type) {
	case float64:
		b, ok := y.(float64)
		if !ok {
			return false
		}
		// NaN and ±Inf render as null.
		na, nb := math.IsNaN(a) || math.IsInf(a, 0), math.IsNaN(b) || math.IsInf(b, 0)
		return na == nb && (na || a == b)
	case time.Time:
		b, ok := y.(time.Time)
		return ok && a.Equal(b)
	default:
		return x == y
	}
}
