package serving_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

const minute = int64(60_000)

func str(s string) *string   { return &s }
func flt(f float64) *float64 { return &f }
func i64(i int64) *int64     { return &i }
func mustQuery(t *testing.T, v *logic.View, raw string) query.Query {
	t.Helper()
	vals, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	q, err := serving.ParseQuery(v, vals)
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return q
}

func TestMergeTable(t *testing.T) {
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	evs := []testenv.OrderEvent{
		{Epoch: 0, TS: 10_000, Country: str("DE"), Device: "ios", Amount: flt(5), Items: i64(2)},
		{Epoch: 10_000, TS: 20_000, Country: str("DE"), Device: "ios", Amount: flt(-1)},
		{Epoch: 20_000, TS: 30_000, Country: str("DE"), Device: "ios", Amount: flt(7), Items: i64(9)}, // speed
		{Epoch: 0, TS: 70_000, Country: str("FR"), Device: "web", Amount: flt(3)},                     // batch only
		{Epoch: 30_000, TS: 130_000, Device: "web", Items: i64(1)},                                    // speed only, null country
		{Epoch: 30_000, TS: 125_000, Device: "web", Amount: flt(2.5)},                                 // same cell
		{Epoch: 10_000, TS: 200_000, Country: str("US"), Device: "ios"},                               // batch, beyond to
	}
	lev := prepare(t, s, evs)
	cutoff := int64(20_000)
	batch, cells := split(v, evs, lev, cutoff)
	snapshot := make([][]float64, len(batch))
	for i, r := range batch {
		snapshot[i] = slices.Clone(r.State.Num)
	}
	wm := int64(2 * minute)
	merged, err := query.Merge(v, cutoff, batch, cells, wm)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range batch {
		if !slices.EqualFunc(r.State.Num, snapshot[i], func(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }) {
			t.Fatalf("Merge modified batch row %d: %v, was %v", i, r.State, snapshot[i])
		}
	}
	wantSources := []string{query.SourceBoth, query.SourceBatch, query.SourceSpeed, query.SourceBatch}
	if len(merged) != len(wantSources) {
		t.Fatalf("merged %d rows, want %d: %+v", len(merged), len(wantSources), merged)
	}
	for i, m := range merged {
		if m.Source != wantSources[i] {
			t.Fatalf("row %d source %s, want %s", i, m.Source, wantSources[i])
		}
		if want := m.Window+minute <= wm; m.Final != want {
			t.Fatalf("row %d final %v", i, m.Final)
		}
	}
	for _, tc := range []struct {
		name  string
		query string
		eq    expQuery
	}{
		{"windows", "from=1970-01-01T00:00:00Z&to=1970-01-01T00:03:00Z", expQuery{from: 0, to: 3 * minute}},
		{"step 2m", "from=1970-01-01T00:00:00Z&to=1970-01-01T00:04:00Z&step=2m", expQuery{from: 0, to: 4 * minute, step: 2 * minute}},
		{"all, no dims", "from=1970-01-01T00:00:00Z&to=1970-01-01T00:03:00Z&step=all&group_by=", expQuery{from: 0, to: 3 * minute, all: true, groupBy: []string{}}},
		{"device only", "from=1970-01-01T00:00:00Z&to=1970-01-01T00:03:00Z&group_by=device", expQuery{from: 0, to: 3 * minute, groupBy: []string{"device"}}},
		{"where null", "from=1970-01-01T00:00:00Z&to=1970-01-01T00:03:00Z&where=country:null", expQuery{from: 0, to: 3 * minute, where: map[string][]string{"country": {"null"}}}},
		{"where in", "from=1970-01-01T00:00:00Z&to=1970-01-01T00:04:00Z&where=country:DE,country:US&group_by=device&step=all",
			expQuery{from: 0, to: 4 * minute, all: true, groupBy: []string{"device"}, where: map[string][]string{"country": {"DE", "US"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := mustQuery(t, v, tc.query)
			b, c := split(v, evs, lev, cutoff)
			merged, err := query.Merge(v, cutoff, b, c, wm)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := query.Apply(v, merged, q.Rollup, wm)
			if err != nil {
				t.Fatal(err)
			}
			tc.eq.cutoff, tc.eq.watermark = cutoff, wm
			checkRows(t, tc.name, rows, expected(minute, 0, evs, tc.eq))
		})
	}
}

func TestMergeNoCutoffAndShape(t *testing.T) {
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	evs := []testenv.OrderEvent{{Epoch: 0, TS: 1000, Country: str("DE"), Device: "ios", Amount: flt(1)}, {Epoch: 10_000, TS: 2000, Country: str("DE"), Device: "ios", Amount: flt(2)}}
	lev := prepare(t, s, evs)
	_, cells := split(v, evs, lev, 0)
	merged, err := query.Merge(v, 0, nil, cells, 0)
	if err != nil || len(merged) != 1 || merged[0].Source != query.SourceSpeed || merged[0].Final {
		t.Fatalf("no cutoff: %+v %v", merged, err)
	}
	if got := v.Finalize(&merged[0].State); got[0] != int64(2) || got[1] != 3.0 {
		t.Fatalf("no cutoff: every speed epoch counts, got %v", got)
	}
	bad := []batchviews.Row{{Window: 0, Group: merged[0].Group, State: logic.State{Num: []float64{1}}}}
	if _, err := query.Merge(v, 10_000, bad, nil, 0); !errors.Is(err, query.ErrStateShape) {
		t.Fatalf("short state: want ErrStateShape, got %v", err)
	}
	if rows, err := query.Merge(v, 0, nil, nil, 0); err != nil || len(rows) != 0 {
		t.Fatalf("empty: %v %v", rows, err)
	}
}

func TestOrderLimit(t *testing.T) {
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	var evs []testenv.OrderEvent
	for i, c := range []string{"DE", "FR", "US", "IT"} {
		for j := 0; j <= i; j++ {
			e := testenv.OrderEvent{TS: 1000, Country: str(c), Device: "web"}
			if c != "IT" {
				e.Amount = flt(float64(10 * (i + 1)))
			}
			evs = append(evs, e)
		}
	}
	lev := prepare(t, s, evs)
	_, cells := split(v, evs, lev, 0)
	merged, _ := query.Merge(v, 0, nil, cells, 0)
	q := mustQuery(t, v, "from=1970-01-01T00:00:00Z&to=1970-01-01T00:01:00Z&group_by=country&order=-revenue&limit=3")
	rows, err := query.Apply(v, merged, q.Rollup, 0)
	if err != nil {
		t.Fatal(err)
	}
	rows = query.OrderLimit(rows, q.Order, q.Desc, q.Limit)
	var got []string
	for _, r := range rows {
		got = append(got, r.Dims[0].S)
	}
	if fmt.Sprint(got) != "[US FR DE]" {
		t.Fatalf("top 3 by revenue: %v", got)
	}
	q = mustQuery(t, v, "from=1970-01-01T00:00:00Z&to=1970-01-01T00:01:00Z&group_by=country&order=revenue")
	rows, _ = query.Apply(v, merged, q.Rollup, 0)
	rows = query.OrderLimit(rows, q.Order, q.Desc, q.Limit)
	got = got[:0]
	for _, r := range rows {
		got = append(got, r.Dims[0].S)
	}
	if fmt.Sprint(got) != "[DE FR US IT]" {
		t.Fatalf("ascending, nulls last: %v", got)
	}
}

func TestParseQueryErrors(t *testing.T) {
	s := testenv.OrdersStream(t)
	tum := testView(t, s, "tum", time.Minute, 0)
	hop := testView(t, s, "hop", time.Minute, 20*time.Second)
	base := "from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z"
	for _, tc := range []struct {
		v     *logic.View
		query string
		param string
	}{
		{tum, "to=2026-01-01T01:00:00Z", "from"},
		{tum, "from=2026-01-01T00:00:00Z", "to"},
		{tum, "from=yesterday&to=2026-01-01T01:00:00Z", "from"},
		{tum, "from=2026-01-01T01:00:00Z&to=2026-01-01T00:00:00Z", "from"},
		{tum, "from=2026-01-01T01:00:00Z&to=2026-01-01T01:00:00Z", "from"},
		{tum, "from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"},
		{tum, base + "&step=90s", "step"},
		{tum, base + "&step=30s", "step"},
		{tum, base + "&step=soon", "step"},
		{hop, base + "&step=40s", "step"},
		{tum, base + "&group_by=city", "group_by"},
		{tum, base + "&group_by=country,country", "group_by"},
		{tum, base + "&where=city:x", "where"},
		{tum, base + "&where=country", "where"},
		{tum, base + "&format=xml", "format"},
		{tum, base + "&order=-bogus", "order"},
		{tum, base + "&limit=0", "limit"},
		{tum, base + "&limit=x", "limit"},
	} {
		vals, _ := url.ParseQuery(tc.query)
		_, err := serving.ParseQuery(tc.v, vals)
		var pe *serving.ParamError
		if !errors.As(err, &pe) || pe.Param != tc.param {
			t.Errorf("%s %q: want a %s error, got %v", tc.v.Name, tc.query, tc.param, err)
		}
	}
	for _, ok := range []struct {
		v     *logic.View
		query string
	}{
		{tum, base + "&step=2m"}, {tum, base + "&step=1d"}, {tum, base + "&step=all"}, {hop, base + "&step=20s"}, {hop, base + "&step=2m"},
		{tum, base + "&group_by=&where=country:DE,device:ios&where=country:FR&format=csv&order=n&limit=5"},
	} {
		vals, _ := url.ParseQuery(ok.query)
		if _, err := serving.ParseQuery(ok.v, vals); err != nil {
			t.Errorf("%s %q: %v", ok.v.Name, ok.query, err)
		}
	}
	q := mustQuery(t, tum, base+"&group_by=device,country&where=country:DE,device:ios&where=country:FR")
	if fmt.Sprint(q.GroupBy) != "[device country]" || fmt.Sprint(q.Dims) != "[1 0]" || len(q.Filters) != 2 || fmt.Sprint(q.Filters[0].Values) != "[DE FR]" {
		t.Fatalf("parsed %+v", q)
	}
	if q := mustQuery(t, tum, base); q.Dims != nil || q.StepText != "1m" || q.Format != "json" || q.Order != -1 {
		t.Fatalf("defaults %+v", q)
	}
}

// TestMergeRollupProperty compares Merge+Apply with an independent
// computation over random events, cutoffs, ranges, steps, groupings and
// filters (fixed seed).
func TestMergeRollupProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	s := testenv.OrdersStream(t)
	views := []struct {
		v         *logic.View
		size, hop int64
	}{
		{testView(t, s, "tum", time.Minute, 0), minute, 0},
		{testView(t, s, "hop", time.Minute, 20*time.Second), minute, 20_000},
		{testView(t, s, "tum10", 10*time.Second, 0), 10_000, 0},
	}
	base := int64(1_764_000_000_000) // 2025-11-24T16:00:00Z, aligned to the minute
	epochs := []int64{base, base + 10_000, base + 20_000, base + 30_000, base + 40_000}
	for iter := range 300 {
		vw := views[r.IntN(len(views))]
		v := vw.v
		evs := testenv.RandomOrderEvents(r, r.IntN(120), base-5*minute, 30*minute, epochs)
		lev := prepare(t, s, evs)
		cutoff := []int64{0, epochs[1], epochs[3], epochs[4] + 10_000}[r.IntN(4)]
		from := base - 5*minute + r.Int64N(10*minute)
		if r.IntN(2) == 0 {
			from -= from % 1000
		}
		to := from + 1 + r.Int64N(30*minute)
		wm := []int64{0, base + r.Int64N(30*minute)}[r.IntN(2)]
		viewStep := vw.hop
		if viewStep == 0 {
			viewStep = vw.size
		}
		vals := url.Values{"from": {logic.FormatTime(from)}, "to": {logic.FormatTime(to)}}
		eq := expQuery{from: from, to: to, cutoff: cutoff, watermark: wm}
		switch r.IntN(4) {
		case 1:
			eq.step = vw.size * int64(1+r.IntN(5))
			vals.Set("step", fmt.Sprintf("%ds", eq.step/1000))
		case 2:
			eq.all = true
			vals.Set("step", "all")
		case 3:
			eq.step = viewStep
			vals.Set("step", fmt.Sprintf("%ds", viewStep/1000))
		}
		switch r.IntN(4) {
		case 1:
			eq.groupBy = []string{}
			vals.Set("group_by", "")
		case 2:
			d := []string{"country", "device"}[r.IntN(2)]
			eq.groupBy = []string{d}
			vals.Set("group_by", d)
		case 3:
			eq.groupBy = []string{"device", "country"}
			vals.Set("group_by", "device,country")
		}
		if r.IntN(3) == 0 {
			eq.where = map[string][]string{"country": {[]string{"DE", "FR", "null"}[r.IntN(3)]}}
			vals.Add("where", "country:"+eq.where["country"][0])
			if r.IntN(2) == 0 {
				eq.where["device"] = []string{"web"}
				vals.Add("where", "device:web")
			}
		}
		label := fmt.Sprintf("iter %d view %s %v cutoff %d wm %d", iter, v.Name, vals, cutoff, wm)
		q, err := serving.ParseQuery(v, vals)
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		batch, cells := split(v, evs, lev, cutoff)
		// The store returns only the query's windows: mimic it.
		batch = slices.DeleteFunc(batch, func(r batchviews.Row) bool { return r.Window < from || r.Window >= to })
		cells = slices.DeleteFunc(cells, func(c query.SpeedCell) bool { return c.Window < from || c.Window >= to })
		merged, err := query.Merge(v, cutoff, batch, cells, wm)
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		rows, err := query.Apply(v, merged, q.Rollup, wm)
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		checkRows(t, label, rows, expected(vw.size, vw.hop, evs, eq))
	}
}
