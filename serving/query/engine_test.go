package query

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

var discard = slog.New(slog.DiscardHandler)

// memSpeed is an in-memory speed layer of a partitioned stream honouring
// SpeedReader's and SpeedStatus' contracts.
type memSpeed struct {
	mu        sync.Mutex
	cells     map[string][]SpeedCell // by view name, of every partition
	seqs      []uint64               // per partition
	wms       []int64                // per partition: the largest event time
	joined    []*logic.View
	notJoined int   // a partition whose views have not joined its commits (-1: none)
	err       error // returned by StreamStatus
}

// memParts is the partitions of memSpeed's stream.
const memParts = 3

func (m *memSpeed) ReadCells(ctx context.Context, v *logic.View, from, to, minEpoch int64, fn func(SpeedCell) error) error {
	m.mu.Lock()
	cells := slices.Clone(m.cells[v.Name])
	m.mu.Unlock()
	for _, c := range cells {
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.Window >= from && c.Window < to && c.Epoch >= minEpoch {
			if err := fn(SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State.Clone()}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *memSpeed) StreamStatus(context.Context, string) (StreamSpeed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return StreamSpeed{}, m.err
	}
	parts := make([]PartSpeed, len(m.seqs))
	for p, seq := range m.seqs {
		views := map[string]ViewSpeed{}
		for _, v := range m.joined {
			views[v.StateKey()] = ViewSpeed{JoinedOK: p != m.notJoined, Joined: seq}
		}
		parts[p] = PartSpeed{Found: true, Seq: seq, Watermark: m.wms[p], Views: views}
	}
	return SpeedOf(parts), nil
}

// stores folds events into what the layers would hold: batch rows of the
// events that arrived before cutoff, speed cells of every epoch (the merge
// must skip those before the cutoff), folded per partition (event i in
// partition i mod memParts), so a cell may come once per partition.
func stores(t *testing.T, v *logic.View, evs []testenv.OrderEvent, cutoff int64) ([]batchviews.Row, []SpeedCell) {
	t.Helper()
	bd := v.NewDelta()
	var sd [memParts]*logic.Delta
	for p := range sd {
		sd[p] = v.NewDelta()
	}
	for i, e := range evs {
		le, _, err := v.Stream.Prepare([]byte(e.JSON(fmt.Sprint("e", i))), 0)
		if err != nil {
			t.Fatalf("prepare %s: %v", []byte(e.JSON(fmt.Sprint("e", i))), err)
		}
		if e.Epoch < cutoff {
			bd.Fold(0, &le)
		}
		sd[i%memParts].Fold(e.Epoch, &le)
	}
	var rows []batchviews.Row
	for k, st := range bd.Cells {
		rows = append(rows, batchviews.Row{Window: k.Window, Group: k.Group, State: st.State(v)})
	}
	slices.SortFunc(rows, func(a, b batchviews.Row) int {
		if a.Window != b.Window {
			return int(a.Window - b.Window)
		}
		return strings.Compare(a.Group, b.Group)
	})
	var cells []SpeedCell
	for _, d := range sd {
		for k, st := range d.Cells {
			cells = append(cells, SpeedCell{Epoch: k.Epoch, Window: k.Window, Group: k.Group, State: st.State(v)})
		}
	}
	return rows, cells
}

// want is a row computed from the raw events with plain arithmetic,
// rendered as the JSON answer renders it.
type want struct {
	window         int64
	country        any // string or nil
	device         string
	n              int64
	sum, min       float64
	cntA           int64
	maxI           int64
	hasI           bool
	batch, speed   bool
	final          bool
	revenueOrNil   any
	avgOrNil       any
	loOrNil        any
	hiOrNil        any
	sourceRendered string
}

// expect computes the per-window answer of [from, to) for a view of
// windows size long starting every hop.
func expect(evs []testenv.OrderEvent, size, hop, from, to, cutoff, watermark int64) []*want {
	rows := map[string]*want{}
	for _, e := range evs {
		first := e.TS - e.TS%hop // ts >= 0 here
		for s := first; s > e.TS-size; s -= hop {
			if s < from || s >= to {
				continue
			}
			var country any
			if e.Country != nil {
				country = *e.Country
			}
			k := fmt.Sprint(s, country, e.Device)
			w := rows[k]
			if w == nil {
				w = &want{window: s, country: country, device: e.Device, final: watermark > 0 && s+size <= watermark}
				rows[k] = w
			}
			w.n++
			if e.Amount != nil {
				if w.cntA == 0 || *e.Amount < w.min {
					w.min = *e.Amount
				}
				w.sum += *e.Amount
				w.cntA++
			}
			if e.Items != nil {
				if !w.hasI || *e.Items > w.maxI {
					w.maxI = *e.Items
				}
				w.hasI = true
			}
			if e.Epoch < cutoff {
				w.batch = true
			} else {
				w.speed = true
			}
		}
	}
	out := make([]*want, 0, len(rows))
	for _, w := range rows {
		if w.cntA > 0 {
			w.revenueOrNil, w.avgOrNil, w.loOrNil = w.sum, w.sum/float64(w.cntA), w.min
		}
		if w.hasI {
			w.hiOrNil = float64(w.maxI)
		}
		switch {
		case w.batch && w.speed:
			w.sourceRendered = "batch+speed"
		case w.batch:
			w.sourceRendered = "batch"
		default:
			w.sourceRendered = "speed"
		}
		out = append(out, w)
	}
	return out
}

func closeTo(got, want any) bool {
	g, gok := got.(float64)
	w, wok := want.(float64)
	if !gok || !wok {
		return got == want
	}
	return math.Abs(g-w) <= 1e-9*math.Max(1, math.Abs(w))
}

// checkJSON compares a JSON answer's rows with the expected ones (in any
// order: the order is checked apart).
func checkJSON(t *testing.T, label string, body []byte, wants []*want) {
	t.Helper()
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: not JSON: %v", label, err)
	}
	if len(got.Rows) != len(wants) {
		t.Fatalf("%s: %d rows, want %d", label, len(got.Rows), len(wants))
	}
	byKey := map[string]*want{}
	for _, w := range wants {
		byKey[fmt.Sprint(logic.FormatTime(w.window), w.country, w.device)] = w
	}
	last := ""
	for i, r := range got.Rows {
		ws, _ := r["window_start"].(string)
		if ws < last {
			t.Fatalf("%s: row %d: window %s after %s", label, i, ws, last)
		}
		last = ws
		w := byKey[fmt.Sprint(ws, r["country"], r["device"])]
		if w == nil {
			t.Fatalf("%s: unexpected row %v", label, r)
		}
		if r["n"] != float64(w.n) || !closeTo(r["revenue"], w.revenueOrNil) || !closeTo(r["avg"], w.avgOrNil) ||
			!closeTo(r["lo"], w.loOrNil) || r["hi"] != w.hiOrNil || r["source"] != w.sourceRendered || r["final"] != w.final || r["exact"] != true {
			t.Fatalf("%s: row %v, want %+v", label, r, *w)
		}
	}
}

type engineEnv struct {
	speed  *memSpeed
	views  *batchviews.Store
	evs    []testenv.OrderEvent
	base   int64
	cutoff int64
	wm     int64 // the watermark (the largest event time less the lateness)
}

// newEngineEnv publishes the batch rows of random events (cutoff: the
// third epoch) for vs and serves their speed cells.
func newEngineEnv(t *testing.T, seed uint64, vs ...*logic.View) *engineEnv {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	base := int64(1_764_000_000_000)
	env := &engineEnv{base: base, cutoff: base + 20_000,
		evs: testenv.RandomOrderEvents(r, 500, base, 20*60_000, []int64{base, base + 10_000, base + 20_000, base + 30_000})}
	st, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env.views = st
	// The partitions have seen events up to different times: the stream's
	// watermark is the smallest (none of them is idle).
	env.speed = &memSpeed{cells: map[string][]SpeedCell{}, seqs: []uint64{7, 3, 3}, wms: []int64{base + 14*60_000, base + 12*60_000, base + 13*60_000},
		joined: vs, notJoined: -1}
	env.wm = base + 12*60_000 - vs[0].Stream.AllowedLateness.Milliseconds()
	env.publish(t, env.cutoff, vs...)
	return env
}

// publish publishes a batch version of cutoff for vs (the speed cells
// keep every epoch).
func (env *engineEnv) publish(t *testing.T, cutoff int64, vs ...*logic.View) {
	t.Helper()
	ver := &batchviews.Version{Views: map[string]batchviews.ViewVersion{}}
	rows := map[string][]batchviews.Row{}
	for _, v := range vs {
		b, c := stores(t, v, env.evs, cutoff)
		rows[v.Name] = b
		ver.Views[v.Name] = batchviews.ViewVersion{Cutoff: cutoff, Definition: v.Definition()}
		env.speed.mu.Lock()
		env.speed.cells[v.Name] = c
		env.speed.mu.Unlock()
	}
	if err := env.views.Publish(ver, rows); err != nil {
		t.Fatal(err)
	}
	env.cutoff = cutoff
}

func newEngine(t *testing.T, env *engineEnv, cacheBytes, maxCells int64, vs ...*logic.View) *Engine {
	t.Helper()
	cat := &config.Catalog{Streams: map[string]*logic.Stream{vs[0].Stream.Name: vs[0].Stream}, Views: map[string]*logic.View{},
		StreamOrder: []string{vs[0].Stream.Name}}
	for _, v := range vs {
		cat.Views[v.Name] = v
		cat.ViewOrder = append(cat.ViewOrder, v.Name)
	}
	e, err := New(Options{Catalog: cat, Speed: env.speed, SpeedStatus: env.speed, Views: env.views, CacheBytes: cacheBytes, MaxCells: maxCells,
		LivePoll: 20 * time.Millisecond, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func (env *engineEnv) query(v *logic.View, from, to int64, format string) Query {
	return Query{Rollup: Rollup{From: from, To: to}, StepText: "x", GroupBy: slices.Clone(v.Dims), Format: format, Order: -1}
}

func answerBytes(t *testing.T, e *Engine, v *logic.View, q Query) []byte {
	t.Helper()
	body, err := e.Answer(context.Background(), v, q)
	if err != nil {
		t.Fatalf("answer %s [%d, %d) %s: %v", v.Name, q.From, q.To, q.Format, err)
	}
	var b bytes.Buffer
	n, err := body.WriteTo(&b)
	if err != nil || int(n) != body.Len() || b.Len() != body.Len() {
		t.Fatalf("write: %d of %d bytes, %v", n, body.Len(), err)
	}
	return b.Bytes()
}

// TestAnswerMatchesTheEvents: Engine.Answer, without HTTP, answers the
// rows plain arithmetic computes from the raw events (batch rows before
// the cutoff, speed cells after it), for random ranges of a tumbling and a
// hopping view, with and without the query cache, asked twice (the second
// answer is the cache's or assembled from cached windows), in JSON and
// CSV.
func TestAnswerMatchesTheEvents(t *testing.T) {
	s := testStream(t)
	tum := testView(t, s, "tum", time.Minute, 0)
	hop := testView(t, s, "hop", time.Minute, 20*time.Second)
	env := newEngineEnv(t, 5, tum, hop)
	r := rand.New(rand.NewPCG(9, 9))
	for _, cache := range []int64{0, 64 << 20} {
		e := newEngine(t, env, cache, 0, tum, hop)
		for i := 0; i < 12; i++ {
			v := []*logic.View{tum, hop}[i%2]
			size, step := v.Window.Size.Milliseconds(), v.Window.Step().Milliseconds()
			from := env.base - 2*60_000 + r.Int64N(12*60_000)
			to := from + 1 + r.Int64N(14*60_000)
			wants := expect(env.evs, size, step, from, to, env.cutoff, env.wm)
			for round := 0; round < 2; round++ {
				label := fmt.Sprintf("cache %d, %s [%d, %d) round %d", cache, v.Name, from-env.base, to-env.base, round)
				checkJSON(t, label, answerBytes(t, e, v, env.query(v, from, to, "json")), wants)
				recs, err := csv.NewReader(bytes.NewReader(answerBytes(t, e, v, env.query(v, from, to, "csv")))).ReadAll()
				if err != nil {
					t.Fatalf("%s: csv: %v", label, err)
				}
				if len(recs) != 1+len(wants) || strings.Join(recs[0], ",") != "window_start,country,device,n,revenue,avg,lo,hi,source,exact,final" {
					t.Fatalf("%s: csv: %d records, head %v; want %d rows", label, len(recs), recs[0], len(wants))
				}
				total := int64(0)
				for _, rec := range recs[1:] {
					n, _ := strconv.ParseInt(rec[3], 10, 64)
					total += n
				}
				wantTotal := int64(0)
				for _, w := range wants {
					wantTotal += w.n
				}
				if total != wantTotal {
					t.Fatalf("%s: csv counts %d events, want %d", label, total, wantTotal)
				}
			}
		}
	}
}

// TestCommitsAndBatchRunsMakeAnswersUnreachable: a cached answer is
// answered again while the speed position stays; a commit (a new
// position) and a batch run (a new version) each make it unreachable.
func TestCommitsAndBatchRunsMakeAnswersUnreachable(t *testing.T) {
	s := testStream(t)
	v := testView(t, s, "tum", time.Minute, 0)
	env := newEngineEnv(t, 6, v)
	e := newEngine(t, env, 64<<20, 0, v)
	from, to := env.base, env.base+20*60_000
	q := env.query(v, from, to, "csv") // the answer cache alone (JSON also assembles windows)
	first := answerBytes(t, e, v, q)
	wants := expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm)
	if n := bytes.Count(first, []byte{'\n'}) - 1; n != len(wants) {
		t.Fatalf("%d rows, want %d", n, len(wants))
	}

	// A new event folded into the speed cells, at the same position: the
	// answer of that position is answered again.
	late := testenv.OrderEvent{Epoch: env.base + 40_000, TS: env.base + 19*60_000 + 5, Device: "ios"}
	env.evs = append(env.evs, late)
	_, cells := stores(t, v, env.evs, env.cutoff)
	env.speed.mu.Lock()
	env.speed.cells[v.Name] = cells
	env.speed.mu.Unlock()
	if again := answerBytes(t, e, v, q); !bytes.Equal(again, first) {
		t.Fatal("same position: the answer changed, so it was not taken from the cache")
	}

	// The commit of that event by one partition, while another restarts
	// a record lower (its speed state rebuilt from a cutoff): the
	// partitions' sequences add up as before, but the position moved, and
	// the new answer has the event.
	env.speed.mu.Lock()
	env.speed.seqs[2]++
	env.speed.seqs[1]--
	env.speed.mu.Unlock()
	wants = expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm)
	checkJSON(t, "after a commit", answerBytes(t, e, v, env.query(v, from, to, "json")), wants)
	if after := answerBytes(t, e, v, q); bytes.Equal(after, first) {
		t.Fatal("after a commit: the answer of the old position was answered")
	}

	// A commit that moves the slowest partition's event time moves the
	// stream's watermark: more windows are final.
	env.speed.mu.Lock()
	env.speed.seqs[1]++
	env.speed.wms[1] = env.base + 16*60_000
	env.speed.mu.Unlock()
	env.wm = env.base + 13*60_000 - s.AllowedLateness.Milliseconds() // the next smallest
	wants = expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm)
	checkJSON(t, "after the slowest partition moved", answerBytes(t, e, v, env.query(v, from, to, "json")), wants)

	// A batch run that covers every epoch: every row comes from the batch
	// rows alone.
	env.publish(t, env.base+60_000, v)
	wants = expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm)
	for _, w := range wants {
		if w.sourceRendered != "batch" {
			t.Fatalf("the new cutoff does not cover the events: %+v", *w)
		}
	}
	checkJSON(t, "after a batch run", answerBytes(t, e, v, env.query(v, from, to, "json")), wants)
}

// TestAnswerErrors: a view whose speed cells have not joined their
// stream's commits is a *RebuildingError; an unreadable speed position is
// ErrUnavailable; an answer reading more than MaxCells speed cells and
// batch rows, or with more than MaxRows rows, is a *TooLargeError naming
// the limit.
func TestAnswerErrors(t *testing.T) {
	s := testStream(t)
	v := testView(t, s, "tum", time.Minute, 0)
	env := newEngineEnv(t, 7, v)
	q := env.query(v, env.base, env.base+20*60_000, "json")

	// One window reads its batch rows and its speed cells after the cutoff.
	one := env.query(v, env.base+5*60_000, env.base+6*60_000, "json")
	rows, cells := stores(t, v, env.evs, env.cutoff)
	read := int64(0)
	for _, r := range rows {
		if r.Window >= one.From && r.Window < one.To {
			read++
		}
	}
	for _, c := range cells {
		if c.Window >= one.From && c.Window < one.To && c.Epoch >= env.cutoff {
			read++
		}
	}
	if _, err := newEngine(t, env, 0, read, v).Answer(context.Background(), v, one); err != nil {
		t.Fatalf("one window within %d cells: %v", read, err)
	}
	_, err := newEngine(t, env, 0, read-1, v).Answer(context.Background(), v, one)
	var te *TooLargeError
	if !errors.As(err, &te) || te.Limit != "http.query_max_cells" || te.Max != read-1 || te.View != v.Name {
		t.Fatalf("one window beyond %d cells: %v", read-1, err)
	}
	// Every row of the answer counts too (http.query_max_rows).
	e, err := New(Options{Catalog: &config.Catalog{Views: map[string]*logic.View{v.Name: v}}, Speed: env.speed, SpeedStatus: env.speed, Views: env.views, MaxRows: 3, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Answer(context.Background(), v, q); !errors.As(err, &te) || te.Limit != "http.query_max_rows" || te.Max != 3 {
		t.Fatalf("beyond 3 rows: %v", err)
	}

	e = newEngine(t, env, 0, 0, v)
	var re *RebuildingError
	for _, c := range []struct {
		name      string
		joined    []*logic.View
		notJoined int
	}{{"no partition joined", nil, -1}, {"one partition not joined", []*logic.View{v}, 1}} {
		env.speed.mu.Lock()
		env.speed.joined, env.speed.notJoined = c.joined, c.notJoined
		env.speed.mu.Unlock()
		_, err = e.Answer(context.Background(), v, q)
		if !errors.As(err, &re) || re.View != v.Name || re.Progress < 0 || re.Progress >= 1 {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := e.Ready(context.Background(), v); !errors.As(err, &re) {
			t.Fatalf("Ready, %s: %v", c.name, err)
		}
	}

	down := errors.New("redis down")
	env.speed.mu.Lock()
	env.speed.joined, env.speed.notJoined, env.speed.err = []*logic.View{v}, -1, down
	env.speed.mu.Unlock()
	if _, err = e.Answer(context.Background(), v, q); !errors.Is(err, ErrUnavailable) || !errors.Is(err, down) {
		t.Fatalf("position unreadable: %v", err)
	}
}

// notices is a CommitNotifier fed by the test.
type notices chan CommitNotice

func (n notices) Subscribe(ctx context.Context) <-chan CommitNotice { return n }

// TestLiveFeedFollowsCommits: a live query's first state holds the
// answer's rows; after a commit it holds the new answer, and its diff from
// the first generation has exactly the rows that changed.
func TestLiveFeedFollowsCommits(t *testing.T) {
	s := testStream(t)
	v := testView(t, s, "tum", time.Minute, 0)
	env := newEngineEnv(t, 8, v)
	cat := &config.Catalog{Streams: map[string]*logic.Stream{s.Name: s}, Views: map[string]*logic.View{v.Name: v}, StreamOrder: []string{s.Name}, ViewOrder: []string{v.Name}}
	ch := make(notices, 1)
	e, err := New(Options{Catalog: cat, Speed: env.speed, SpeedStatus: env.speed, Views: env.views, CacheBytes: 64 << 20, Notifier: ch, LivePoll: time.Hour, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	from, to := env.base, env.base+20*60_000
	f := e.JoinLive(v, env.query(v, from, to, "json"))
	defer f.Leave()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, ok := f.Next(ctx, 0, 0)
	if !ok || st.Err != nil || st.Gen != 1 {
		t.Fatalf("first state: gen %d, %v", st.Gen, st.Err)
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	checkJSON(t, "snapshot", []byte(`{"rows":`+string(snap)+`}`), expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm))

	// Two events in one open window, committed.
	at := env.base + 15*60_000
	extra := []testenv.OrderEvent{{Epoch: env.base + 40_000, TS: at + 1, Device: "web"}, {Epoch: env.base + 40_000, TS: at + 2, Device: "web"}}
	env.evs = append(env.evs, extra...)
	_, cells := stores(t, v, extra, env.cutoff) // an epoch of their own: cells of their own
	env.speed.mu.Lock()
	env.speed.cells[v.Name] = append(env.speed.cells[v.Name], cells...)
	env.speed.seqs[1]++
	seq := env.speed.seqs[1]
	env.speed.mu.Unlock()
	ch <- CommitNotice{Stream: s.Name, Part: 1, Seq: seq}
	st2, ok := f.Next(ctx, st.Gen, st.ErrGen)
	if !ok || st2.Err != nil || st2.Gen != 2 {
		t.Fatalf("after a commit: gen %d, %v", st2.Gen, st2.Err)
	}
	rows, final := f.Diff(st2, st.Gen)
	if string(final) != "[]" {
		t.Fatalf("no window became final, got %s", final)
	}
	var changed []map[string]any
	if err := json.Unmarshal(rows, &changed); err != nil {
		t.Fatal(err)
	}
	all := expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm)
	var wantChanged []*want
	for _, w := range all {
		if w.window == at && w.country == nil && w.device == "web" {
			wantChanged = append(wantChanged, w)
		}
	}
	b, _ := json.Marshal(map[string]any{"rows": changed})
	checkJSON(t, "diff", b, wantChanged)

	// Another partition commits up to the same sequence number: its own
	// position moved, so the live query follows it.
	more := testenv.OrderEvent{Epoch: env.base + 40_000, TS: at + 3, Device: "ios"}
	env.evs = append(env.evs, more)
	_, cells = stores(t, v, []testenv.OrderEvent{more}, env.cutoff)
	env.speed.mu.Lock()
	env.speed.cells[v.Name] = append(env.speed.cells[v.Name], cells...)
	env.speed.seqs[2] = seq
	env.speed.mu.Unlock()
	ch <- CommitNotice{Stream: s.Name, Part: 2, Seq: seq}
	st3, ok := f.Next(ctx, st2.Gen, st2.ErrGen)
	if !ok || st3.Err != nil || st3.Gen != 3 {
		t.Fatalf("after a commit of partition 2 at seq %d: gen %d, %v", seq, st3.Gen, st3.Err)
	}
	rows, _ = f.Diff(st3, st2.Gen)
	changed = nil
	if err := json.Unmarshal(rows, &changed); err != nil {
		t.Fatal(err)
	}
	wantChanged = nil
	for _, w := range expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm) {
		if w.window == at && w.country == nil && w.device == "ios" {
			wantChanged = append(wantChanged, w)
		}
	}
	b, _ = json.Marshal(map[string]any{"rows": changed})
	checkJSON(t, "diff of partition 2's commit", b, wantChanged)
}

// TestNoHTTP: the engine does not import net/http (serving writes its
// answers).
func TestNoHTTP(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == "net/http" || strings.HasPrefix(p, "net/http/") || strings.Contains(p, "go-chi") {
				t.Errorf("%s imports %s", name, p)
			}
		}
	}
}
