package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// The parity of last and first where it is hard: a stream of three
// partitions, records of several events (one arrival and sequence, their
// own index), arrivals that tie within and across partitions, event times
// coarse enough that most tie, nulls in every field. The speed path (fold
// at log positions → the Redis commit script → a read merging the
// partitions) and the batch path (lake rows with their _part, _seq, _idx
// and _arrival → DuckDB → batch view files) must both answer, alone,
// merged across a cutoff and rolled up, what this file computes by
// sorting each bucket's events on (event time, arrival, partition,
// sequence, index).

// kEvent is an event as this test knows it: its log position, event time
// and values (absent: not in vals).
type kEvent struct {
	pos  logic.LogPos
	ts   int64
	vals map[string]any
}

func (e kEvent) before(o kEvent) bool {
	a := []int64{e.ts, e.pos.Arrival, int64(e.pos.Part), int64(e.pos.Seq), int64(e.pos.Index)}
	b := []int64{o.ts, o.pos.Arrival, int64(o.pos.Part), int64(o.pos.Seq), int64(o.pos.Index)}
	return slices.Compare(a, b) < 0
}

// kView is a view of the test: its window, dimensions and where.
type kView struct {
	name      string
	size, hop int64
	dims      []string
	where     string
	pass      func(kEvent) bool
}

// kFields are the picked fields and the measures over them, in order.
var kFields = []string{"name", "x", "n", "ok", "at", "ts"}

func kMeasures() (names, exprs []string) {
	for _, f := range kFields {
		for _, k := range []string{"last", "first"} {
			names = append(names, k+"_"+f)
			exprs = append(exprs, k+"("+f+")")
		}
	}
	return append(names, "events"), append(exprs, "count()")
}

func TestPickParityPartitionsAndTies(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	seeds := 3
	if testing.Short() {
		seeds = 1
	}
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { pickParityTrial(t, rdb, uint64(seed)) })
	}
}

func pickParityTrial(t *testing.T, rdb *redis.Client, seed uint64) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 0x1a57))
	const parts = 3
	views := []kView{
		{name: "a", size: 10000, dims: []string{"g"}, pass: func(kEvent) bool { return true }},
		{name: "b", size: 60000, hop: 20000, dims: []string{"k", "g"}[:r.IntN(3)], where: "n > 3",
			pass: func(e kEvent) bool { n, ok := e.vals["n"].(int64); return ok && n > 3 }},
		{name: "c", size: []int64{20000, 30000}[r.IntN(2)], pass: func(kEvent) bool { return true }},
	}
	names, exprs := kMeasures()
	var b strings.Builder
	fmt.Fprintf(&b, "epoch: 1s\nstreams:\n  s:\n    time: ts\n    partitions: %d\n    fields: {ts: time, g: string, k: int, name: string, x: float, n: int, ok: bool, at: time}\nviews:\n", parts)
	for _, v := range views {
		fmt.Fprintf(&b, "  %s:\n    stream: s\n    window: %dms\n", v.name, v.size)
		if v.hop > 0 {
			fmt.Fprintf(&b, "    hop: %dms\n", v.hop)
		}
		fmt.Fprintf(&b, "    group_by: [%s]\n", strings.Join(v.dims, ", "))
		if v.where != "" {
			fmt.Fprintf(&b, "    where: %q\n", v.where)
		}
		b.WriteString("    measures:\n")
		for i := range names {
			fmt.Fprintf(&b, "      %s: %s\n", names[i], exprs[i])
		}
	}
	cfg, err := config.Parse([]byte(b.String()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	s := cat.Streams["s"]

	// Events: per partition, records of 1 to 4 events; arrivals that
	// often repeat (within a partition and across them).
	base := time.Date(2024, 5, 1, 23, 57, 0, 0, time.UTC).UnixMilli() // windows cross midnight: two days of units
	var evs []kEvent
	byPart := make([][]kEvent, parts)
	for p := range parts {
		arr, seq := base+300_000, uint64(0)
		for range 150 + r.IntN(150) {
			seq++
			arr += []int64{0, 0, 1, 2, 40}[r.IntN(5)]
			for i := range 1 + r.IntN(4) {
				e := kEvent{pos: logic.LogPos{Arrival: arr, Part: p, Seq: seq, Index: i}, ts: base + 5000*r.Int64N(60), vals: map[string]any{}}
				maybe := func(f string, x any) {
					if r.IntN(4) > 0 {
						e.vals[f] = x
					}
				}
				maybe("g", []string{"a", "b"}[r.IntN(2)])
				maybe("k", int64(r.IntN(3)))
				maybe("name", fmt.Sprint("n", r.IntN(1000)))
				maybe("x", float64(r.IntN(801)-400)/4)
				maybe("n", int64(r.IntN(10)))
				maybe("ok", r.IntN(2) == 0)
				maybe("at", base+r.Int64N(1e9))
				byPart[p] = append(byPart[p], e)
				evs = append(evs, e)
			}
		}
	}
	prepare := func(e kEvent) logic.Event {
		m := map[string]any{"ts": e.ts}
		for k, x := range e.vals {
			m[k] = x
		}
		raw, _ := json.Marshal(m)
		ev, _, err := s.Prepare(raw, e.pos.Arrival)
		if err != nil {
			t.Fatalf("prepare %s: %v", raw, err)
		}
		return ev
	}
	lastArr := int64(0)
	for _, e := range evs {
		lastArr = max(lastArr, e.pos.Arrival)
	}
	mid := logic.EpochOf(base+300_000+(lastArr-base-300_000)/2, time.Second)

	// Batch, over every event and over those that arrived before mid.
	runBatch := func(before int64) *batchviews.Store {
		dir := t.TempDir()
		lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
		if err != nil {
			t.Fatal(err)
		}
		for p, pe := range byPart {
			var rows []lake.Row
			for _, e := range pe {
				if e.pos.Arrival < before {
					rows = append(rows, lake.Row{Part: p, Seq: e.pos.Seq, Index: e.pos.Index, Arrival: e.pos.Arrival, Event: prepare(e)})
				}
			}
			if len(rows) == 0 {
				t.Fatalf("partition %d: no rows before %d", p, before)
			}
			if _, err := lk.Write(s, rows); err != nil {
				t.Fatal(err)
			}
			last := rows[len(rows)-1]
			if err := lk.CommitPart("s", p, lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: min(before, (lastArr/1000+1)*1000)}); err != nil {
				t.Fatal(err)
			}
		}
		vs, err := batchviews.OpenDir(filepath.Join(dir, "views"))
		if err != nil {
			t.Fatal(err)
		}
		run, err := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Threads: 1}, lk, vs, nil, cat, quietLogger(), prometheus.NewRegistry()).Run(ctx, nil)
		if err != nil || run.Status != batchviews.StatusSucceeded {
			t.Fatalf("batch run %+v: %v", run, err)
		}
		return vs
	}
	full, half := runBatch(math.MaxInt64), runBatch(mid)

	// Speed: each partition committed in three parts, whole records.
	st := speedstore.New(rdb, testenv.Namespace(t))
	for p, pe := range byPart {
		prev := uint64(0)
		for c := 1; c <= 3; c++ {
			upto := pe[len(pe)-1].pos.Seq * uint64(c) / 3
			var deltas []*logic.Delta
			for _, name := range cat.ViewOrder {
				d := cat.Views[name].NewDelta()
				for _, e := range pe {
					if e.pos.Seq > prev && e.pos.Seq <= upto {
						ev := prepare(e)
						d.FoldAt(logic.EpochOf(e.pos.Arrival, time.Second), e.pos, &ev)
					}
				}
				deltas = append(deltas, d)
			}
			if err := st.Commit(ctx, "s", p, prev, speedstore.Position{Seq: upto}, 0, deltas); err != nil {
				t.Fatal(err)
			}
			prev = upto
		}
	}

	for _, kv := range views {
		v := cat.Views[kv.name]
		cells, err := st.Read(ctx, v, math.MinInt64, math.MaxInt64, 0)
		if err != nil {
			t.Fatal(err)
		}
		speed := speedCells(cells)
		fullRows, fullCut := currentRows(t, full, v)
		halfRows, halfCut := currentRows(t, half, v)
		if halfCut != mid {
			t.Fatalf("half cutoff %d, want %d", halfCut, mid)
		}
		answer := func(cutoff int64, b []batchviews.Row, sp []query.SpeedCell, roll query.Rollup) []query.ResultRow {
			merged, err := query.Merge(v, cutoff, b, sp, 0)
			if err != nil {
				t.Fatal(err)
			}
			out, err := query.Apply(v, merged, roll, 0)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		check := func(what string, rows []query.ResultRow, step int64, keep []string) {
			t.Helper()
			want := kExpect(kv, evs, step, keep)
			if len(rows) != len(want) {
				t.Fatalf("%s %s: %d rows, want %d", kv.name, what, len(rows), len(want))
			}
			for _, row := range rows {
				parts := make([]string, len(row.Dims))
				for i, d := range row.Dims {
					parts[i] = dimString(d.Any())
				}
				k := pKey{row.Window, strings.Join(parts, "|")}
				es, ok := want[k]
				if !ok {
					t.Fatalf("%s %s: unexpected row %+v", kv.name, what, k)
				}
				if !row.Exact {
					t.Fatalf("%s %s: row %+v from %s not exact", kv.name, what, k, row.Source)
				}
				for i, m := range v.Measures {
					w := kWant(es, m)
					if g, ok := row.Values[i].(time.Time); ok {
						if wt, ok := w.(time.Time); ok && g.Equal(wt) {
							continue
						}
					}
					if row.Values[i] != w {
						t.Fatalf("%s %s: row %+v from %s: %s = %v (%T), want %v (%T)", kv.name, what, k, row.Source, m.Name, row.Values[i], row.Values[i], w, w)
					}
				}
			}
		}
		check("batch alone", answer(fullCut, fullRows, nil, query.Rollup{}), 0, kv.dims)
		check("speed alone", answer(0, nil, speed, query.Rollup{}), 0, kv.dims)
		check("batch+speed", answer(halfCut, halfRows, speed, query.Rollup{}), 0, kv.dims)
		for trial := 0; trial < 3; trial++ {
			step := kv.size * []int64{1, 2, 3, 6}[r.IntN(4)]
			var keep []string
			idx := []int{}
			for i, d := range kv.dims {
				if r.IntN(2) == 0 {
					keep, idx = append(keep, d), append(idx, i)
				}
			}
			roll := query.Rollup{Step: step, Dims: idx}
			what := fmt.Sprintf("step %dms group_by %v", step, keep)
			check(what+" merged", answer(halfCut, halfRows, speed, roll), step, keep)
			check(what+" batch", answer(fullCut, fullRows, nil, roll), step, keep)
		}
	}
}

// kExpect groups the events that pass a view's where by bucket (window,
// or step bucket) and kept dimensions.
func kExpect(v kView, evs []kEvent, step int64, keep []string) map[pKey][]kEvent {
	out := map[pKey][]kEvent{}
	for _, e := range evs {
		if !v.pass(e) {
			continue
		}
		var buckets []int64
		switch {
		case step > 0:
			buckets = []int64{floorDiv(e.ts, step) * step}
		case v.hop > 0:
			for s := floorDiv(e.ts, v.hop) * v.hop; s > e.ts-v.size; s -= v.hop {
				buckets = append(buckets, s)
			}
		default:
			buckets = []int64{floorDiv(e.ts, v.size) * v.size}
		}
		parts := make([]string, len(keep))
		for i, d := range keep {
			parts[i] = dimString(e.vals[d])
		}
		for _, b := range buckets {
			k := pKey{b, strings.Join(parts, "|")}
			out[k] = append(out[k], e)
		}
	}
	return out
}

// kWant is a measure's answer over a bucket's events: for last (first)
// the value of the latest (earliest) event that has one; times as
// time.Time.
func kWant(es []kEvent, m logic.Measure) any {
	if m.Kind == logic.Count {
		return int64(len(es))
	}
	var best *kEvent
	for i := range es {
		e := &es[i]
		if m.Field != "ts" && e.vals[m.Field] == nil {
			continue
		}
		if best == nil || m.Kind == logic.Last && best.before(*e) || m.Kind == logic.First && e.before(*best) {
			best = e
		}
	}
	switch {
	case best == nil:
		return nil
	case m.Field == "ts":
		return time.UnixMilli(best.ts).UTC()
	case m.Field == "at":
		return time.UnixMilli(best.vals["at"].(int64)).UTC()
	}
	return best.vals[m.Field]
}
