package serving_test

import (
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

var testMeasures = []logic.MeasureDef{
	{Name: "n", Expr: "count()"}, {Name: "revenue", Expr: "sum(amount)"}, {Name: "avg", Expr: "avg(amount)"},
	{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(items)"}, {Name: "items", Expr: "sum(items)"},
}

func testView(t testing.TB, s *logic.Stream, name string, window, hop time.Duration) *logic.View {
	t.Helper()
	v, err := logic.NewView(name, logic.ViewDef{Stream: s.Name, Window: window, Hop: hop, GroupBy: []string{"country", "device"}, Measures: testMeasures}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func testCatalog(s *logic.Stream, views ...*logic.View) *config.Catalog {
	cat := &config.Catalog{Streams: map[string]*logic.Stream{s.Name: s}, Views: map[string]*logic.View{}, StreamOrder: []string{s.Name}}
	for _, v := range views {
		cat.Views[v.Name] = v
		cat.ViewOrder = append(cat.ViewOrder, v.Name)
	}
	return cat
}

// prepare turns test events into logic events through the stream's Prepare.
func prepare(t testing.TB, s *logic.Stream, evs []testenv.OrderEvent) []logic.Event {
	t.Helper()
	out := make([]logic.Event, len(evs))
	for i, e := range evs {
		ev, _, err := s.Prepare([]byte(e.JSON(fmt.Sprint(i))), 0)
		if err != nil {
			t.Fatalf("prepare %s: %v", e.JSON("x"), err)
		}
		out[i] = ev
	}
	return out
}

// split folds events with logic.Delta: batch rows (epoch < cutoff, epochs
// collapsed) and speed cells (every epoch, so Merge must skip the old ones).
func split(v *logic.View, evs []testenv.OrderEvent, lev []logic.Event, cutoff int64) ([]batchviews.Row, []query.SpeedCell) {
	bd, sd := v.NewDelta(), v.NewDelta()
	for i := range evs {
		if cutoff > 0 && evs[i].Epoch < cutoff {
			bd.Fold(0, &lev[i])
		}
		sd.Fold(evs[i].Epoch, &lev[i])
	}
	var rows []batchviews.Row
	for k, st := range bd.Cells {
		rows = append(rows, batchviews.Row{Window: k.Window, Group: k.Group, State: st.State(v)})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Window != rows[j].Window {
			return rows[i].Window < rows[j].Window
		}
		return rows[i].Group < rows[j].Group
	})
	var cells []query.SpeedCell
	for k, st := range sd.Cells {
		cells = append(cells, query.SpeedCell{Epoch: k.Epoch, Window: k.Window, Group: k.Group, State: st.State(v)})
	}
	return rows, cells
}

// expRow is an independently computed answer row.
type expRow struct {
	bucket int64
	dims   []string // kept dims as strings ("null" for null)
	n      int64
	sumA   float64
	cntA   int64
	minA   float64
	hasA   bool
	maxI   int64
	sumI   int64
	hasI   bool
	batch  bool
	speed  bool
	final  bool
}

func (e *expRow) values() []any {
	out := []any{e.n, nil, nil, nil, nil, nil}
	if e.cntA > 0 {
		out[1], out[2], out[3] = e.sumA, e.sumA/float64(e.cntA), e.minA
	}
	if e.hasI {
		out[4], out[5] = e.maxI, e.sumI
	}
	return out
}

func (e *expRow) source() string {
	switch {
	case e.batch && e.speed:
		return query.SourceBoth
	case e.batch:
		return query.SourceBatch
	}
	return query.SourceSpeed
}

type expQuery struct {
	from, to  int64
	step      int64 // 0: none
	all       bool
	groupBy   []string // nil: all
	where     map[string][]string
	cutoff    int64
	watermark int64
}

func fdiv(a, b int64) int64 {
	if a >= 0 {
		return a / b
	}
	return -((-a + b - 1) / b)
}

// expected computes the answer from raw events with plain arithmetic.
func expected(size, hop int64, evs []testenv.OrderEvent, q expQuery) []*expRow {
	if hop == 0 {
		hop = size
	}
	dimNames := []string{"country", "device"}
	keep := q.groupBy
	if keep == nil {
		keep = dimNames
	}
	rows := map[string]*expRow{}
	anchor := fdiv(q.from+hop-1, hop) * hop
	for _, e := range evs {
		dv := map[string]string{"country": "null", "device": e.Device}
		if e.Country != nil {
			dv["country"] = *e.Country
		}
		ok := true
		for d, vals := range q.where {
			match := false
			for _, v := range vals {
				if dv[d] == v {
					match = true
				}
			}
			ok = ok && match
		}
		if !ok {
			continue
		}
		type contrib struct{ bucket, end int64 }
		var cs []contrib
		switch {
		case q.all:
			s := anchor + fdiv(e.TS-anchor, size)*size
			if s >= q.from && s < q.to {
				last := anchor + fdiv(q.to-1-anchor, size)*size
				cs = append(cs, contrib{q.from, last + size})
			}
		case q.step != 0 && q.step != hop:
			s := fdiv(e.TS, size) * size
			if s >= q.from && s < q.to {
				b := fdiv(s, q.step) * q.step
				cs = append(cs, contrib{b, b + q.step})
			}
		default:
			for s := fdiv(e.TS, hop) * hop; s > e.TS-size; s -= hop {
				if s >= q.from && s < q.to {
					cs = append(cs, contrib{s, s + size})
				}
			}
		}
		var kept []string
		for _, d := range keep {
			kept = append(kept, dv[d])
		}
		for _, c := range cs {
			k := fmt.Sprint(c.bucket, kept)
			r := rows[k]
			if r == nil {
				r = &expRow{bucket: c.bucket, dims: kept, final: q.watermark > 0 && c.end <= q.watermark}
				rows[k] = r
			}
			r.n++
			if e.Amount != nil {
				if r.cntA == 0 || *e.Amount < r.minA {
					r.minA = *e.Amount
				}
				r.sumA += *e.Amount
				r.cntA++
			}
			if e.Items != nil {
				if !r.hasI || *e.Items > r.maxI {
					r.maxI = *e.Items
				}
				r.sumI += *e.Items
				r.hasI = true
			}
			if q.cutoff > 0 && e.Epoch < q.cutoff {
				r.batch = true
			} else {
				r.speed = true
			}
		}
	}
	out := make([]*expRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].bucket != out[j].bucket {
			return out[i].bucket < out[j].bucket
		}
		return strings.Join(out[i].dims, "\x00") < strings.Join(out[j].dims, "\x00")
	})
	return out
}

func sameValue(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case int64:
		y, ok := b.(int64)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(x))
	}
	return false
}

// dimStrings renders result dims like expected() does.
func dimStrings(vals []logic.Value) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		if v.Null() {
			out[i] = "null"
		} else {
			out[i] = v.String()
		}
	}
	return out
}

// checkRows compares result rows (order-insensitive on groups) with the
// expectation.
func checkRows(t *testing.T, label string, got []query.ResultRow, want []*expRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d\n got %s\nwant %s", label, len(got), len(want), fmtGot(got), fmtWant(want))
	}
	idx := map[string]*expRow{}
	for _, w := range want {
		idx[fmt.Sprint(w.bucket, w.dims)] = w
	}
	for i := range got {
		g := &got[i]
		if i > 0 && got[i-1].Window > g.Window {
			t.Fatalf("%s: rows not sorted by window", label)
		}
		w := idx[fmt.Sprint(g.Window, dimStrings(g.Dims))]
		if w == nil {
			t.Fatalf("%s: unexpected row %d %v", label, g.Window, dimStrings(g.Dims))
		}
		wv := w.values()
		for j := range wv {
			if !sameValue(g.Values[j], wv[j]) {
				t.Fatalf("%s: row %d %v measure %d = %v (%T), want %v (%T)", label, g.Window, dimStrings(g.Dims), j, g.Values[j], g.Values[j], wv[j], wv[j])
			}
		}
		if g.Source != w.source() || g.Final != w.final || !g.Exact {
			t.Fatalf("%s: row %d %v source/final/exact = %s/%v/%v, want %s/%v/true", label, g.Window, dimStrings(g.Dims), g.Source, g.Final, g.Exact, w.source(), w.final)
		}
	}
}

func fmtGot(rows []query.ResultRow) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "[%d %v %v] ", r.Window, dimStrings(r.Dims), r.Values)
	}
	return b.String()
}

func fmtWant(rows []*expRow) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "[%d %v %v] ", r.bucket, r.dims, r.values())
	}
	return b.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
