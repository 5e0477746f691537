package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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

// The parity suite is the proof that the two layers cannot drift apart:
// random schemas, random views and random out-of-order events go through
// the speed path (logic.Delta → the Redis commit script → speedstore.Read)
// and the batch path (Parquet lake → DuckDB → batch view files), are merged
// and rolled up by serving, and every answer is checked against a direct
// computation in this file that shares nothing with Braid but the event
// values. Additive measures and last / first must be equal; count_distinct within
// logic.DistinctTolerance and quantiles within α·max(|v_lo|, |v_hi|) of
// quantile_cont (v_lo, v_hi: the values of the ranks it interpolates
// between) wherever a sketch answers; everything exact where one batch row
// answers. quantile_parity_test.go adds small groups of every size from 1
// to 10 against DuckDB's own quantile_cont.
//
// BRAID_PARITY_SEEDS sets the number of seeds (default 4).

type pField struct {
	name string
	typ  logic.FieldType
}

type pMeasure struct {
	name, kind, field string
	q                 float64
}

type pView struct {
	name          string
	size, hop     int64 // ms; hop 0 = tumbling
	dims          []string
	where         string
	pass          func(map[string]any) bool
	measures      []pMeasure
	numericFields map[string]bool
}

var pStrings = []string{"a", "b", "", "Zürich", `q"uote`, "it's", "x\x1fy"}

func parityGen(r *rand.Rand) (fields []pField, views []pView) {
	types := []logic.FieldType{logic.TypeString, logic.TypeInt, logic.TypeFloat, logic.TypeBool}
	nf := 2 + r.IntN(5)
	for i := 0; i < nf; i++ {
		fields = append(fields, pField{fmt.Sprint("f", i), types[r.IntN(len(types))]})
	}
	var dimFields, numFields, anyFields []pField
	numeric := map[string]bool{}
	for _, f := range fields {
		anyFields = append(anyFields, f)
		if f.typ != logic.TypeFloat {
			dimFields = append(dimFields, f)
		}
		if f.typ == logic.TypeInt || f.typ == logic.TypeFloat {
			numFields = append(numFields, f)
			numeric[f.name] = true
		}
	}
	sizes := []int64{1000, 2000, 5000, 10000, 30000, 60000, 90000, 300000}
	nv := 2 + r.IntN(2)
	for i := 0; i < nv; i++ {
		v := pView{name: fmt.Sprint("v", i), size: sizes[r.IntN(len(sizes))], numericFields: numeric}
		if r.IntN(3) == 0 {
			var hops []int64
			for _, h := range []int64{1000, 2000, 5000, 10000, 30000} {
				if h < v.size && v.size%h == 0 {
					hops = append(hops, h)
				}
			}
			if len(hops) > 0 {
				v.hop = hops[r.IntN(len(hops))]
			}
		}
		for _, j := range r.Perm(len(dimFields))[:min(len(dimFields), r.IntN(3))] {
			v.dims = append(v.dims, dimFields[j].name)
		}
		if r.IntN(2) == 0 {
			v.where, v.pass = parityWhere(r, fields)
		} else {
			v.pass = func(map[string]any) bool { return true }
		}
		nm := 2 + r.IntN(5)
		for j := 0; j < nm; j++ {
			m := pMeasure{name: fmt.Sprint("m", j)}
			switch k := r.IntN(8); {
			case k == 0 || len(numFields) == 0 && k >= 4:
				m.kind = "count"
				if r.IntN(2) == 0 {
					m.field = anyFields[r.IntN(len(anyFields))].name
				}
			case k < 4:
				m.kind = "count_distinct"
				if r.IntN(6) == 0 {
					m.field = "ts"
				} else {
					m.field = anyFields[r.IntN(len(anyFields))].name
				}
			default:
				m.kind = []string{"sum", "avg", "min", "max", "quantile", "quantile"}[r.IntN(6)]
				m.field = numFields[r.IntN(len(numFields))].name
				if m.kind == "quantile" {
					m.q = []float64{0, 0.1, 0.5, 0.9, 0.95, 0.99, 1}[r.IntN(7)]
				}
			}
			v.measures = append(v.measures, m)
		}
		// last and first of any field, ties broken by arrival.
		for j := r.IntN(3); j > 0; j-- {
			m := pMeasure{name: fmt.Sprint("p", j), kind: []string{"last", "first"}[r.IntN(2)], field: anyFields[r.IntN(len(anyFields))].name}
			if r.IntN(5) == 0 {
				m.field = "ts"
			}
			v.measures = append(v.measures, m)
		}
		views = append(views, v)
	}
	return fields, views
}

// parityWhere returns a predicate of one to three atoms joined by and/or,
// and its direct evaluation. Every atom is false on null, so SQL's unknown
// and false coincide and plain booleans evaluate it.
func parityWhere(r *rand.Rand, fields []pField) (string, func(map[string]any) bool) {
	atom := func() (string, func(map[string]any) bool) {
		f := fields[r.IntN(len(fields))]
		if r.IntN(5) == 0 {
			return f.name + " is not null", func(m map[string]any) bool { return m[f.name] != nil }
		}
		switch f.typ {
		case logic.TypeString:
			a, b := pStrings[r.IntN(3)], pStrings[r.IntN(3)]
			return fmt.Sprintf("%s in ('%s', '%s')", f.name, a, b), func(m map[string]any) bool {
				s, ok := m[f.name].(string)
				return ok && (s == a || s == b)
			}
		case logic.TypeBool:
			return f.name + " = true", func(m map[string]any) bool { b, ok := m[f.name].(bool); return ok && b }
		case logic.TypeInt:
			c := int64(r.IntN(21) - 10)
			return fmt.Sprintf("%s > %d", f.name, c), func(m map[string]any) bool { x, ok := m[f.name].(int64); return ok && x > c }
		default:
			c := float64(r.IntN(400)-200) / 2
			return fmt.Sprintf("%s <= %g", f.name, c), func(m map[string]any) bool { x, ok := m[f.name].(float64); return ok && x <= c }
		}
	}
	expr, pass := atom()
	for n := r.IntN(3); n > 0; n-- {
		e2, p2 := atom()
		p1 := pass
		if r.IntN(2) == 0 {
			expr, pass = "("+expr+") and ("+e2+")", func(m map[string]any) bool { return p1(m) && p2(m) }
		} else {
			expr, pass = "("+expr+") or ("+e2+")", func(m map[string]any) bool { return p1(m) || p2(m) }
		}
	}
	return expr, pass
}

func parityConfig(fields []pField, views []pView) string {
	var b strings.Builder
	b.WriteString("epoch: 1s\nstreams:\n  s:\n    time: ts\n    fields: {ts: time")
	for _, f := range fields {
		fmt.Fprintf(&b, ", %s: %s", f.name, f.typ)
	}
	b.WriteString("}\nviews:\n")
	for _, v := range views {
		fmt.Fprintf(&b, "  %s:\n    stream: s\n    window: %dms\n", v.name, v.size)
		if v.hop > 0 {
			fmt.Fprintf(&b, "    hop: %dms\n", v.hop)
		}
		fmt.Fprintf(&b, "    group_by: [%s]\n", strings.Join(v.dims, ", "))
		if v.where != "" {
			fmt.Fprintf(&b, "    where: %s\n", strconv.Quote(v.where))
		}
		b.WriteString("    measures:\n")
		for _, m := range v.measures {
			arg := m.field
			if m.kind == "quantile" {
				arg += ", " + strconv.FormatFloat(m.q, 'g', -1, 64)
			}
			fmt.Fprintf(&b, "      %s: %s(%s)\n", m.name, m.kind, arg)
		}
	}
	return b.String()
}

// pEvent is an event as the test knows it: plain Go values (nil = absent).
type pEvent struct {
	ts, arrival int64
	vals        map[string]any
}

func parityEvents(r *rand.Rand, fields []pField, n int, base, span int64) []pEvent {
	out := make([]pEvent, n)
	for i := range out {
		e := pEvent{ts: base + r.Int64N(span), arrival: base + span + int64(i)*5, vals: map[string]any{}}
		for _, f := range fields {
			if r.IntN(6) == 0 {
				continue
			}
			switch f.typ {
			case logic.TypeString:
				e.vals[f.name] = pStrings[r.IntN(len(pStrings))]
			case logic.TypeInt:
				e.vals[f.name] = int64(r.IntN(41) - 20)
			case logic.TypeFloat:
				e.vals[f.name] = float64(r.IntN(8001)-4000) / 8 // dyadic: sums are exact in any order
			case logic.TypeBool:
				e.vals[f.name] = r.IntN(2) == 0
			}
		}
		out[i] = e
	}
	return out
}

// pKey is a row of an answer: bucket start and the kept dimensions.
type pKey struct {
	w    int64
	dims string
}

func dimString(x any) string {
	if x == nil {
		return "null"
	}
	return fmt.Sprint(x)
}

// pAgg holds a bucket's events' values per measure, for direct answers:
// the values themselves, or for last and first a pObs of each.
type pAgg struct{ vals [][]any }

// pObs is a value of a last or first measure with what orders it: the
// event time, then the arrival (distinct per event in this suite).
type pObs struct {
	ts, arrival int64
	x           any
}

// expect computes a view's answer directly: per bucket (window, or step
// bucket of the windows aligned to the size) and kept dimensions, the
// values of every measure. keep lists the kept dimension names.
func expect(v pView, evs []pEvent, step int64, keep []string) map[pKey]*pAgg {
	out := map[pKey]*pAgg{}
	for _, e := range evs {
		if !v.pass(e.vals) {
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
			a := out[k]
			if a == nil {
				a = &pAgg{vals: make([][]any, len(v.measures))}
				out[k] = a
			}
			for i, m := range v.measures {
				if m.field == "" {
					a.vals[i] = append(a.vals[i], true)
					continue
				}
				x := e.vals[m.field]
				if m.field == "ts" {
					x = e.ts
				}
				if x != nil && (m.kind == "last" || m.kind == "first") {
					x = pObs{e.ts, e.arrival, x}
				}
				if x != nil {
					a.vals[i] = append(a.vals[i], x)
				}
			}
		}
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// pValue is the logic.Value of a test value.
func pValue(x any) logic.Value {
	switch y := x.(type) {
	case string:
		return logic.Value{Kind: logic.TypeString, S: y}
	case int64:
		return logic.Value{Kind: logic.TypeInt, I: y}
	case float64:
		return logic.Value{Kind: logic.TypeFloat, F: y}
	case bool:
		if y {
			return logic.Value{Kind: logic.TypeBool, I: 1}
		}
		return logic.Value{Kind: logic.TypeBool}
	}
	panic(fmt.Sprintf("no value for %T", x))
}

func asFloat(x any) float64 {
	switch y := x.(type) {
	case int64:
		return float64(y)
	case float64:
		return y
	}
	panic(fmt.Sprintf("not a number: %T", x))
}

// checkMeasure compares one answer with the direct computation; exact says
// whether the row claims exactness (then sketch measures must be exact too).
func checkMeasure(m pMeasure, intField bool, got any, vals []any, exact bool) string {
	switch m.kind {
	case "count":
		if got != int64(len(vals)) {
			return fmt.Sprintf("%v, want %d", got, len(vals))
		}
		return ""
	case "count_distinct":
		set := map[any]bool{}
		for _, x := range vals {
			if f, ok := x.(float64); ok && f == 0 {
				x = 0.0
			}
			set[x] = true
		}
		n := int64(len(set))
		g, ok := got.(int64)
		// The sketch answer must be exactly that of a sketch of the values
		// themselves (the layers' sketches merge into the sketch of the
		// union), and that within the stated bound of the exact count.
		var h logic.HLL
		for x := range set {
			h.Add(logic.AppendDistinctElem(nil, pValue(x)))
		}
		if !ok || (exact && g != n) || (!exact && g != h.Count()) || math.Abs(float64(g-n)) > logic.DistinctTolerance(n) {
			return fmt.Sprintf("%v, exact %d (row exact: %v; a sketch of the values themselves says %d)", got, n, exact, h.Count())
		}
		return ""
	case "last", "first":
		return checkPick(m, got, vals)
	}
	if len(vals) == 0 {
		if got != nil {
			return fmt.Sprintf("%v, want null", got)
		}
		return ""
	}
	xs := make([]float64, len(vals))
	sum := 0.0
	for i, x := range vals {
		xs[i] = asFloat(x)
		sum += xs[i]
	}
	sort.Float64s(xs)
	var want any
	switch m.kind {
	case "sum":
		want = sum
		if intField {
			want = int64(sum)
		}
	case "avg":
		want = sum / float64(len(xs))
	case "min", "max":
		x := xs[0]
		if m.kind == "max" {
			x = xs[len(xs)-1]
		}
		want = x
		if intField {
			want = int64(x)
		}
	case "quantile":
		g, ok := got.(float64)
		if !ok {
			return fmt.Sprintf("%v (%T), want a number", got, got)
		}
		// quantile_cont: interpolated between the values of ranks lo and hi.
		h := m.q * float64(len(xs)-1)
		lo, hi := int(math.Floor(h)), int(math.Ceil(h))
		c := xs[lo] + (h-float64(lo))*(xs[hi]-xs[lo])
		if exact {
			if math.Abs(g-c) > 1e-9*math.Max(1, math.Abs(c)) {
				return fmt.Sprintf("%v, exact quantile_cont %v", g, c)
			}
			return ""
		}
		if bound := logic.QuantileAlpha * math.Max(math.Abs(xs[lo]), math.Abs(xs[hi])) * (1 + 1e-9); math.Abs(g-c) > bound {
			return fmt.Sprintf("%v, beyond %v of quantile_cont %v (between the values %v, %v of ranks %d, %d of %d)", g, bound, c, xs[lo], xs[hi], lo, hi, len(xs))
		}
		return ""
	}
	if got != want {
		return fmt.Sprintf("%v (%T), want %v (%T)", got, got, want, want)
	}
	return ""
}

// checkPick compares a last or first answer with the value of the latest
// (earliest) observation, by event time then arrival; the time field
// answers a time.
func checkPick(m pMeasure, got any, obs []any) string {
	var want any
	if len(obs) > 0 {
		best := obs[0].(pObs)
		for _, o := range obs[1:] {
			o := o.(pObs)
			later := o.ts > best.ts || o.ts == best.ts && o.arrival > best.arrival
			if later == (m.kind == "last") {
				best = o
			}
		}
		want = best.x
		if m.field == "ts" {
			want = time.UnixMilli(best.x.(int64)).UTC()
		}
	}
	if w, ok := want.(time.Time); ok {
		if g, ok := got.(time.Time); ok && g.Equal(w) {
			return ""
		}
	} else if got == want {
		return ""
	}
	return fmt.Sprintf("%v (%T), want %v (%T)", got, got, want, want)
}

// checkAnswer compares serving's rows with the direct answer.
func checkAnswer(t *testing.T, what string, v *logic.View, pv pView, rows []query.ResultRow, keep []string, want map[pKey]*pAgg, mustBeExact bool) {
	t.Helper()
	if len(rows) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(rows), len(want))
	}
	fieldType := map[string]logic.FieldType{}
	for _, f := range v.Stream.Fields {
		fieldType[f.Name] = f.Type
	}
	for _, r := range rows {
		parts := make([]string, len(r.Dims))
		for i, d := range r.Dims {
			parts[i] = dimString(d.Any())
		}
		k := pKey{r.Window, strings.Join(parts, "|")}
		a := want[k]
		if a == nil {
			t.Fatalf("%s: unexpected row %+v", what, k)
		}
		if mustBeExact && !r.Exact {
			t.Fatalf("%s: row %+v from %s is not exact", what, k, r.Source)
		}
		if r.Exact != (v.Exact() || mustBeExact || r.State.Exact != nil) {
			t.Fatalf("%s: row %+v exact=%v", what, k, r.Exact)
		}
		for i, m := range pv.measures {
			if msg := checkMeasure(m, fieldType[m.field] == logic.TypeInt, r.Values[i], a.vals[i], r.Exact); msg != "" {
				t.Fatalf("%s: row %+v source %s: %s = %s(%s): %s", what, k, r.Source, m.name, m.kind, m.field, msg)
			}
		}
	}
}

func TestParityOfSpeedAndBatch(t *testing.T) {
	seeds := 4
	if s, err := strconv.Atoi(os.Getenv("BRAID_PARITY_SEEDS")); err == nil && s > 0 {
		seeds = s
	}
	if testing.Short() {
		seeds = 1
	}
	rdb := testenv.StartRedis(t).Client(t)
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { parityTrial(t, rdb, uint64(seed)) })
	}
}

// lakeBatch writes rows to a new lake in dir, with a checkpoint covering
// arrivals before covered, and runs one batch run of every view over it.
func lakeBatch(t *testing.T, dir string, cat *config.Catalog, s *logic.Stream, rows []lake.Row, covered int64) *batchviews.Store {
	t.Helper()
	lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	last := rows[len(rows)-1]
	if err := lk.Commit(s.Name, lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: covered}); err != nil {
		t.Fatal(err)
	}
	views, err := batchviews.OpenDir(filepath.Join(dir, "views"))
	if err != nil {
		t.Fatal(err)
	}
	run, err := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Threads: 1}, lk, views, nil, cat, quietLogger(), prometheus.NewRegistry()).Run(context.Background(), nil)
	if err != nil || run.Status != batchviews.StatusSucceeded || run.RowsRead != int64(len(rows)) {
		t.Fatalf("batch run %+v: %v", run, err)
	}
	return views
}

func parityTrial(t *testing.T, rdb *redis.Client, seed uint64) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 0xb7a1d))
	fields, pviews := parityGen(r)
	yml := parityConfig(fields, pviews)
	cfg, err := config.Parse([]byte(yml), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, yml)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatalf("%v\n%s", err, yml)
	}
	s := cat.Streams["s"]
	base := time.Date(2024, 5, 1, 23, 50, 0, 0, time.UTC).UnixMilli()
	span := int64(2+r.IntN(25)) * 60000
	evs := parityEvents(r, fields, 1500+r.IntN(1500), base, span)
	t.Logf("seed %d: %d events over %d min\n%s", seed, len(evs), span/60000, yml)

	// Prepare every event through the real parse path; lake rows with arrivals.
	levs := make([]logic.Event, len(evs))
	rows := make([]lake.Row, len(evs))
	for i, e := range evs {
		m := map[string]any{"ts": e.ts}
		for k, x := range e.vals {
			m[k] = x
		}
		raw, _ := json.Marshal(m)
		ev, _, err := s.Prepare(raw, e.arrival)
		if err != nil {
			t.Fatalf("prepare %s: %v", raw, err)
		}
		levs[i] = ev
		rows[i] = lake.Row{Seq: uint64(i + 1), Arrival: e.arrival, Event: ev}
	}
	epoch := int64(1000)
	last := evs[len(evs)-1].arrival
	mid := logic.EpochOf(evs[len(evs)/2].arrival, time.Second) // a cutoff that splits the events

	// Batch path, twice: over every event, and over those before mid.
	runBatch := func(dir string, upto int, covered int64) *batchviews.Store {
		return lakeBatch(t, dir, cat, s, rows[:upto], covered)
	}
	full := runBatch(t.TempDir(), len(rows), (last/epoch+1)*epoch)
	upto := sort.Search(len(rows), func(i int) bool { return rows[i].Arrival >= mid })
	half := runBatch(t.TempDir(), upto, mid)

	// Speed path: fold by arrival epoch, commit in three micro-batches to Redis.
	st := speedstore.New(rdb, testenv.Namespace(t))
	prev := uint64(0)
	for c := 0; c < 3; c++ {
		lo, hi := c*len(levs)/3, (c+1)*len(levs)/3
		var deltas []*logic.Delta
		for _, name := range cat.ViewOrder {
			d := cat.Views[name].NewDelta()
			for i := lo; i < hi; i++ {
				d.FoldAt(logic.EpochOf(evs[i].arrival, time.Second), logic.LogPos{Arrival: evs[i].arrival, Seq: uint64(i + 1)}, &levs[i])
			}
			deltas = append(deltas, d)
		}
		if err := st.Commit(ctx, "s", 0, prev, speedstore.Position{Seq: uint64(hi)}, 0, deltas); err != nil {
			t.Fatal(err)
		}
		prev = uint64(hi)
	}

	for _, pv := range pviews {
		v := cat.Views[pv.name]
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
		answer := func(what string, cutoff int64, b []batchviews.Row, sp []query.SpeedCell, roll query.Rollup) []query.ResultRow {
			merged, err := query.Merge(v, cutoff, b, sp, 0)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			out, err := query.Apply(v, merged, roll, 0)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return out
		}
		win := expect(pv, evs, 0, pv.dims)
		checkAnswer(t, pv.name+" batch alone", v, pv, answer("batch", fullCut, fullRows, nil, query.Rollup{}), pv.dims, win, true)
		checkAnswer(t, pv.name+" speed alone", v, pv, answer("speed", 0, nil, speed, query.Rollup{}), pv.dims, win, false)
		checkAnswer(t, pv.name+" batch+speed", v, pv, answer("merged", halfCut, halfRows, speed, query.Rollup{}), pv.dims, win, false)

		// Rollups: a step that is a multiple of the size, a subset of the
		// dimensions; over the merged view and over batch alone.
		for trial := 0; trial < 3; trial++ {
			step := pv.size * []int64{1, 2, 3, 5, 10}[r.IntN(5)]
			if pv.hop == 0 && step == pv.size && trial > 0 {
				step *= 4
			}
			var keep []string
			var idx []int
			for i, d := range pv.dims {
				if r.IntN(2) == 0 {
					keep = append(keep, d)
					idx = append(idx, i)
				}
			}
			if idx == nil {
				idx = []int{}
			}
			roll := query.Rollup{Step: step, Dims: idx}
			want := expect(pv, evs, step, keep)
			what := fmt.Sprintf("%s step %dms group_by %v", pv.name, step, keep)
			checkAnswer(t, what+" merged", v, pv, answer(what, halfCut, halfRows, speed, roll), keep, want, false)
			checkAnswer(t, what+" batch", v, pv, answer(what, fullCut, fullRows, nil, roll), keep, want, false)
		}
	}
}

// speedCells converts the speed store's cells to the serving layer's.
func speedCells(cells []speedstore.Cell) []query.SpeedCell {
	out := make([]query.SpeedCell, len(cells))
	for i, c := range cells {
		out[i] = query.SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State}
	}
	return out
}

// currentRows returns a view's rows in a store's current version and their cutoff.
func currentRows(t *testing.T, vs *batchviews.Store, v *logic.View) ([]batchviews.Row, int64) {
	t.Helper()
	ver, err := vs.Current()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := vs.Rows(context.Background(), ver, v, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	return rs, ver.Views[v.Name].Cutoff
}
