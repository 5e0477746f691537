package batch_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// TestQuantileBucketSQLMatchesGo: the bucket function rendered for DuckDB
// gives the same key as the Go one on every value, including values on and
// next to bucket boundaries, so batch-built and speed-built sketches merge.
func TestQuantileBucketSQLMatchesGo(t *testing.T) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE v (i INTEGER, x DOUBLE)`); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	xs := []float64{0, 1, -1, 1e-9, -1e-9, 1e-10, 123.45, 1e300, -1e300, 5e-324}
	gamma := (1 + logic.QuantileAlpha) / (1 - logic.QuantileAlpha)
	for k := -200; k <= 200; k++ { // boundaries and their neighbours
		b := math.Pow(gamma, float64(k))
		xs = append(xs, b, math.Nextafter(b, 0), math.Nextafter(b, math.Inf(1)), -b)
	}
	for i := 0; i < 10000; i++ {
		xs = append(xs, math.Exp(rng.NormFloat64()*10)*float64(1-2*rng.IntN(2)), math.Round(rng.Float64()*1e6)/100)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	st, err := tx.Prepare(`INSERT INTO v VALUES (?, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range xs {
		if _, err := st.Exec(i, x); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT i, ` + logic.QuantileBucketSQL("x") + ` FROM v ORDER BY i`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	mismatches, n := 0, 0
	for rows.Next() {
		var i int
		var k int32
		if err := rows.Scan(&i, &k); err != nil {
			t.Fatal(err)
		}
		n++
		if want := logic.QuantileBucket(xs[i]); k != want {
			mismatches++
			if mismatches < 5 {
				t.Errorf("x=%v: DuckDB bucket %d, Go %d", xs[i], k, want)
			}
		}
	}
	if n != len(xs) || mismatches > 0 {
		t.Fatalf("%d values, %d mismatches", n, mismatches)
	}
	t.Logf("%d values, 0 mismatches between DuckDB and Go buckets", n)
}

const smallGroupsConfig = `
epoch: 1s
streams:
  s:
    time: ts
    fields: {ts: time, g: string, x: float, n: int}
views:
  q:
    stream: s
    window: 1m
    group_by: [g]
    measures:
      x0: quantile(x, 0)
      x10: quantile(x, 0.1)
      x25: quantile(x, 0.25)
      x50: quantile(x, 0.5)
      x90: quantile(x, 0.9)
      x95: quantile(x, 0.95)
      x99: quantile(x, 0.99)
      x100: quantile(x, 1)
      n50: quantile(n, 0.5)
      n95: quantile(n, 0.95)
`

// TestQuantileParitySmallGroups: groups of every size from 1 to 10 values,
// of positive, negative and mixed signs, go through both layers (Redis
// speed cells, lake and DuckDB batch rows), are merged across a batch
// cutoff and rolled up; every quantile answered is compared with DuckDB's
// own quantile_cont over a plain table of the same values: equal where a
// batch row answers alone, within α·max(|v_lo|, |v_hi|) where a sketch
// answers (v_lo, v_hi: the values of the ranks quantile_cont interpolates
// between, found by sorting here).
func TestQuantileParitySmallGroups(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.Parse([]byte(smallGroupsConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	s, v := cat.Streams["s"], cat.Views["q"]
	rng := rand.New(rand.NewPCG(21, 22))

	// The values: per group, 1..10 in the first minute (the size the group
	// is named by) and 1..10 more in the second, so a two-minute rollup
	// merges two windows.
	type value struct {
		w, ts int64
		g     string
		x     float64
		n     int64
	}
	w0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	magnitude := func() float64 {
		switch rng.IntN(4) {
		case 0:
			return math.Round(math.Exp(rng.NormFloat64()*4)*1000) / 1000
		case 1:
			return float64(rng.IntN(8)) / 4 // repeats and zeros
		case 2:
			return 1e6 + float64(rng.IntN(1000))
		}
		return float64(rng.IntN(100000)) / 8
	}
	signed := func(sign string, i int) float64 {
		x := magnitude()
		switch {
		case sign == "neg", sign == "mixed" && i == 1, sign == "mixed" && i > 1 && rng.IntN(2) == 0:
			return -x
		}
		return x
	}
	var vals []value
	for size := 1; size <= 10; size++ {
		for _, sign := range []string{"pos", "neg", "mixed"} {
			for rep := 0; rep < 3; rep++ {
				g := fmt.Sprintf("%02d-%s-%d", size, sign, rep)
				for wi, k := range []int{size, 1 + rng.IntN(10)} {
					w := w0 + int64(wi)*60000
					for i := 0; i < k; i++ {
						x := signed(sign, i)
						n := int64(rng.IntN(2001))
						if x < 0 || sign == "neg" {
							n = -n
						}
						vals = append(vals, value{w: w, ts: w + rng.Int64N(60000), g: g, x: x, n: n})
					}
				}
			}
		}
	}
	rng.Shuffle(len(vals), func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })

	// Both layers, from the same events in arrival order.
	arrival0 := w0 + 10*60000
	rows := make([]lake.Row, len(vals))
	evs := make([]logic.Event, len(vals))
	for i, x := range vals {
		raw := fmt.Sprintf(`{"ts":%d,"g":%q,"x":%s,"n":%d}`, x.ts, x.g, strconv.FormatFloat(x.x, 'g', -1, 64), x.n)
		ev, _, err := s.Prepare([]byte(raw), arrival0+int64(i)*7)
		if err != nil {
			t.Fatalf("prepare %s: %v", raw, err)
		}
		evs[i] = ev
		rows[i] = lake.Row{Seq: uint64(i + 1), Arrival: arrival0 + int64(i)*7, Event: ev}
	}
	last := rows[len(rows)-1].Arrival
	mid := logic.EpochOf(rows[len(rows)/2].Arrival, time.Second)
	upto := sort.Search(len(rows), func(i int) bool { return rows[i].Arrival >= mid })
	full := lakeBatch(t, t.TempDir(), cat, s, rows, (last/1000+1)*1000)
	half := lakeBatch(t, t.TempDir(), cat, s, rows[:upto], mid)
	st := speedstore.New(testenv.StartRedis(t).Client(t), testenv.Namespace(t))
	d := v.NewDelta()
	for i := range evs {
		d.Fold(logic.EpochOf(rows[i].Arrival, time.Second), &evs[i])
	}
	if err := st.Commit(ctx, "s", 0, 0, speedstore.Position{Seq: uint64(len(rows))}, 0, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	cells, err := st.Read(ctx, v, math.MinInt64, math.MaxInt64, 0)
	if err != nil {
		t.Fatal(err)
	}
	speed := speedCells(cells)
	fullRows, fullCut := currentRows(t, full, v)
	halfRows, halfCut := currentRows(t, half, v)

	// DuckDB's quantile_cont over a plain table of the values, per bucket
	// (the window, or two minutes) and group (or none).
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t (w BIGINT, g VARCHAR, x DOUBLE, n BIGINT)`); err != nil {
		t.Fatal(err)
	}
	ins, err := db.Prepare(`INSERT INTO t VALUES (?, ?, ?, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range vals {
		if _, err := ins.Exec(x.w, x.g, x.x, x.n); err != nil {
			t.Fatal(err)
		}
	}
	ins.Close()
	type spec struct {
		field string
		q     float64
	}
	specs := []spec{{"x", 0}, {"x", 0.1}, {"x", 0.25}, {"x", 0.5}, {"x", 0.9}, {"x", 0.95}, {"x", 0.99}, {"x", 1}, {"n", 0.5}, {"n", 0.95}}
	type answer struct {
		cont    []float64    // DuckDB's quantile_cont per measure
		xs, ns  []float64    // the values, sorted here
		lohi    [][2]float64 // per measure: the values of ranks floor and ceil of q·(n-1)
		size    int
		signsOf string
	}
	duck := func(bucket, group string) map[string]*answer {
		q := "SELECT " + bucket + " AS b, " + group + " AS k, list(x), list(CAST(n AS DOUBLE))"
		for _, sp := range specs {
			q += fmt.Sprintf(", quantile_cont(%s, %v)", sp.field, sp.q)
		}
		rs, err := db.Query(q + " FROM t GROUP BY ALL")
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		out := map[string]*answer{}
		for rs.Next() {
			var b int64
			var k string
			var xl, nl []any
			a := &answer{cont: make([]float64, len(specs))}
			dest := []any{&b, &k, &xl, &nl}
			for i := range a.cont {
				dest = append(dest, &a.cont[i])
			}
			if err := rs.Scan(dest...); err != nil {
				t.Fatal(err)
			}
			for _, x := range xl {
				a.xs = append(a.xs, x.(float64))
			}
			for _, x := range nl {
				a.ns = append(a.ns, x.(float64))
			}
			sort.Float64s(a.xs)
			sort.Float64s(a.ns)
			a.size = len(a.xs)
			neg, pos := a.xs[0] < 0, a.xs[len(a.xs)-1] > 0
			a.signsOf = map[[2]bool]string{{false, true}: "pos", {true, false}: "neg", {true, true}: "mixed", {false, false}: "zero"}[[2]bool{neg, pos}]
			for i, sp := range specs {
				xs := a.xs
				if sp.field == "n" {
					xs = a.ns
				}
				r := sp.q * float64(len(xs)-1)
				lo, hi := xs[int(math.Floor(r))], xs[int(math.Ceil(r))]
				a.lohi = append(a.lohi, [2]float64{lo, hi})
				// The direct interpolation agrees with DuckDB's.
				if c := lo + (r-math.Floor(r))*(hi-lo); math.Abs(c-a.cont[i]) > 1e-12*math.Max(1, math.Abs(c)) {
					t.Fatalf("DuckDB's quantile_cont %v, interpolated by sorting %v", a.cont[i], c)
				}
			}
			out[fmt.Sprint(b, "/", k)] = a
		}
		if err := rs.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	perWindow, perTwoMin, allGroups := duck("w", "g"), duck("w - w % 120000", "g"), duck("w - w % 120000", "''")

	// Every answer against DuckDB's.
	covered := map[string]map[string]bool{} // answer path → "size/signs" seen where a sketch answered
	check := func(what string, cutoff int64, b []batchviews.Row, sp []query.SpeedCell, roll query.Rollup, want map[string]*answer, mustBeExact, mustBeSketch bool) {
		merged, err := query.Merge(v, cutoff, b, sp, 0)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		out, err := query.Apply(v, merged, roll, 0)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(out) != len(want) {
			t.Fatalf("%s: %d rows, want %d", what, len(out), len(want))
		}
		covered[what] = map[string]bool{}
		for _, r := range out {
			k := ""
			if len(r.Dims) > 0 {
				k = r.Dims[0].S
			}
			a := want[fmt.Sprint(r.Window, "/", k)]
			if a == nil {
				t.Fatalf("%s: unexpected row %d/%s", what, r.Window, k)
			}
			if (mustBeExact && !r.Exact) || (mustBeSketch && r.Exact) {
				t.Fatalf("%s: row %d/%s from %s exact=%v", what, r.Window, k, r.Source, r.Exact)
			}
			if !r.Exact {
				covered[what][fmt.Sprint(a.size, "/", a.signsOf)] = true
			}
			for i, sp := range specs {
				g, ok := r.Values[i].(float64)
				c, lo, hi := a.cont[i], a.lohi[i][0], a.lohi[i][1]
				if !ok {
					t.Fatalf("%s: row %d/%s: %s = %v (%T)", what, r.Window, k, v.Measures[i].Name, r.Values[i], r.Values[i])
				}
				bound := logic.QuantileAlpha * math.Max(math.Abs(lo), math.Abs(hi)) * (1 + 1e-9)
				if r.Exact {
					bound = 1e-9 * math.Max(1, math.Abs(c))
				}
				if math.Abs(g-c) > bound {
					xs := a.xs
					if sp.field == "n" {
						xs = a.ns
					}
					t.Fatalf("%s: row %d/%s (%s, exact %v): quantile(%s, %v) = %v, DuckDB's quantile_cont %v (between %v and %v): beyond %v; values %v",
						what, r.Window, k, r.Source, r.Exact, sp.field, sp.q, g, c, lo, hi, bound, xs)
				}
			}
		}
	}
	two := query.Rollup{Step: 120000}
	check("batch alone", fullCut, fullRows, nil, query.Rollup{}, perWindow, true, false)
	check("speed alone", 0, nil, speed, query.Rollup{}, perWindow, false, true)
	check("batch+speed", halfCut, halfRows, speed, query.Rollup{}, perWindow, false, false)
	check("batch+speed 2m", halfCut, halfRows, speed, two, perTwoMin, false, true)
	check("batch 2m", fullCut, fullRows, nil, two, perTwoMin, false, true)
	check("batch+speed 2m all groups", halfCut, halfRows, speed, query.Rollup{Step: 120000, Dims: []int{}}, allGroups, false, true)
	// The sketch answered groups of every size from 1 to 10 and each sign.
	for _, what := range []string{"speed alone", "batch+speed"} {
		for size := 1; size <= 10; size++ {
			for _, sign := range []string{"pos", "neg", "mixed"} {
				if size == 1 && sign == "mixed" {
					continue
				}
				if !covered[what][fmt.Sprint(size, "/", sign)] {
					t.Errorf("%s: no sketch answer for a group of %d values of %s sign", what, size, sign)
				}
			}
		}
	}
	t.Logf("%d events, %d groups per window; every quantile within its bound of DuckDB's quantile_cont", len(vals), len(perWindow))
}
