package batch_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
)

// The where parity tests hold the two executions of a `where` predicate
// together: logic's Go evaluator (speed layer) and the DuckDB SQL it renders
// (batch layer) must select exactly the same events of a real Parquet lake.

var wpCities = []string{"Paris", "Berlin", "O'Hare", `Say "hi"`, "Zürich", "", "paris", "a\\b"}

func wpStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("trips", logic.StreamDef{
		Time: "ts",
		Fields: map[string]logic.FieldType{
			"ts": logic.TypeTime, "city": logic.TypeString, "fare": logic.TypeFloat,
			"pax": logic.TypeInt, "card": logic.TypeBool, "booked": logic.TypeTime,
		},
	}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var wpBase = time.Date(2024, 5, 1, 23, 58, 0, 0, time.UTC).UnixMilli()

// wpEvents prepares n random events (with nulls) and writes them to a lake
// as committed files; arrivals increase by 7 ms per event from wpBase.
func wpEvents(t testing.TB, s *logic.Stream, r *rand.Rand, n int) ([]logic.Event, []int64, string) {
	t.Helper()
	evs := make([]logic.Event, 0, n)
	arrivals := make([]int64, 0, n)
	rows := make([]lake.Row, 0, n)
	for i := 0; i < n; i++ {
		m := map[string]any{"ts": wpBase + r.Int64N(4*60_000)}
		if r.IntN(8) != 0 {
			m["city"] = wpCities[r.IntN(len(wpCities))]
		}
		if r.IntN(8) != 0 {
			m["fare"] = float64(r.IntN(4000)-1000) / 100 // -10.00 .. 29.99, exact cents
		}
		if r.IntN(8) != 0 {
			m["pax"] = r.IntN(10) - 3
		}
		if r.IntN(8) != 0 {
			m["card"] = r.IntN(2) == 0
		}
		if r.IntN(8) != 0 {
			m["booked"] = wpBase - r.Int64N(3*24*3_600_000)
		}
		raw, _ := json.Marshal(m)
		ev, _, err := s.Prepare(raw, wpBase)
		if err != nil {
			t.Fatalf("prepare %s: %v", raw, err)
		}
		arr := wpBase + int64(i)*7
		evs = append(evs, ev)
		arrivals = append(arrivals, arr)
		rows = append(rows, lake.Row{Seq: uint64(i + 1), Arrival: arr, Event: ev})
	}
	lk, err := lake.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit(s.Name, lake.Checkpoint{Seq: uint64(n), Arrival: arrivals[n-1], CoveredUntil: arrivals[n-1] + 1}); err != nil {
		t.Fatal(err)
	}
	files, err := lk.Files(s.Name)
	if err != nil || len(files) < 2 {
		t.Fatalf("lake files %v %v (want several date partitions)", files, err)
	}
	q := make([]string, len(files))
	for i, f := range files {
		q[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
	}
	return evs, arrivals, "read_parquet([" + strings.Join(q, ", ") + "])"
}

// wpGen writes random valid predicates over wpStream's fields.
type wpGen struct{ r *rand.Rand }

func (g wpGen) op() string {
	return []string{"=", "!=", "<>", "<", "<=", ">", ">="}[g.r.IntN(7)]
}

func (g wpGen) quote(s string) string {
	if g.r.IntN(2) == 0 {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// lit returns a literal for a field, near the generated data.
func (g wpGen) lit(field string) string {
	switch field {
	case "city":
		if g.r.IntN(5) == 0 {
			return g.quote([]string{"M", "Q", "b", "Paris ", "Zz"}[g.r.IntN(5)])
		}
		return g.quote(wpCities[g.r.IntN(len(wpCities))])
	case "fare":
		switch g.r.IntN(4) {
		case 0:
			return strconv.Itoa(g.r.IntN(40) - 10)
		case 1:
			return strconv.FormatFloat(float64(g.r.IntN(4000)-1000)/100, 'f', -1, 64)
		case 2:
			return fmt.Sprintf("%.1e", float64(g.r.IntN(300)-100)/10)
		}
		return strconv.FormatFloat(g.r.Float64()*40-10, 'g', -1, 64)
	case "pax":
		if g.r.IntN(3) == 0 {
			return strconv.FormatFloat(float64(g.r.IntN(20)-6)/2, 'f', 1, 64)
		}
		return strconv.Itoa(g.r.IntN(12) - 4)
	case "card":
		return []string{"true", "false", "TRUE", "False"}[g.r.IntN(4)]
	case "ts", "booked":
		var ms int64
		if field == "ts" {
			ms = wpBase + g.r.Int64N(4*60_000)
		} else {
			ms = wpBase - g.r.Int64N(3*24*3_600_000)
		}
		if g.r.IntN(4) == 0 {
			ms = ms / 1000 * 1000 // whole seconds: exact matches of = happen
		}
		if g.r.IntN(2) == 0 {
			return strconv.FormatInt(ms, 10)
		}
		loc := time.FixedZone("x", (g.r.IntN(5)-2)*3600)
		return "'" + time.UnixMilli(ms).In(loc).Format("2006-01-02T15:04:05.999Z07:00") + "'"
	}
	panic(field)
}

func (g wpGen) test() string {
	fields := []string{"city", "fare", "pax", "card", "ts", "booked"}
	f := fields[g.r.IntN(len(fields))]
	switch g.r.IntN(10) {
	case 0:
		if g.r.IntN(2) == 0 {
			return f + " is null"
		}
		return f + " IS NOT NULL"
	case 1, 2:
		n := 1 + g.r.IntN(4)
		lits := make([]string, n)
		for i := range lits {
			lits[i] = g.lit(f)
		}
		kw := " in "
		if g.r.IntN(2) == 0 {
			kw = " not in "
		}
		return f + kw + "(" + strings.Join(lits, ", ") + ")"
	}
	op := g.op()
	if f == "card" {
		op = []string{"=", "!=", "<>"}[g.r.IntN(3)]
	}
	if g.r.IntN(5) == 0 {
		return g.lit(f) + " " + op + " " + f
	}
	return f + " " + op + " " + g.lit(f)
}

func (g wpGen) expr(depth int) string {
	if depth <= 0 {
		return g.test()
	}
	switch g.r.IntN(5) {
	case 0:
		return "not " + g.expr(depth-1)
	case 1:
		return "(" + g.expr(depth-1) + ")"
	case 2:
		return g.expr(depth-1) + " and " + g.expr(depth-1)
	case 3:
		return g.expr(depth-1) + " or " + g.expr(depth-1)
	}
	return g.test()
}

func TestWherePredicateParity(t *testing.T) {
	s := wpStream(t)
	r := rand.New(rand.NewPCG(20240501, 7))
	evs, _, src := wpEvents(t, s, r, 3000)
	db := storagetest.DuckDB(t)
	g := wpGen{r}
	var exprs []string
	for i := 0; i < 400; i++ {
		exprs = append(exprs, g.expr(r.IntN(4)))
	}
	// Fixed cases that exercise the edges of the typing.
	exprs = append(exprs,
		"city = 'O''Hare'", `city = "Say ""hi"""`, "city = 'a\\b'", "city > 'Zürich'", "city = ''",
		"fare = 0.1", "fare > -0.5", "pax > 2.5", "pax in (1, 2.5)", "pax = 2.0",
		"ts >= '2024-05-02T00:00:00Z'", "ts < '2024-05-02T02:00:00+02:00'", "booked < 1714521600000",
		"not (city = 'Paris' and fare > 3)", "card = true or pax is null",
	)
	nontrivial := 0
	for _, e := range exprs {
		p, err := logic.ParseWhere(e, s)
		if err != nil {
			t.Fatalf("generated predicate %q: %v", e, err)
		}
		want := 0
		for i := range evs {
			if p.Match(&evs[i]) {
				want++
			}
		}
		var got int
		q := "SELECT count(*) FROM " + src + " WHERE " + p.SQL()
		if err := db.QueryRow(q).Scan(&got); err != nil {
			t.Fatalf("%q: %v\n%s", e, err, q)
		}
		if got != want {
			t.Fatalf("%q: DuckDB selects %d rows, Match accepts %d\nSQL: %s", e, got, want, p.SQL())
		}
		if want > 0 && want < len(evs) {
			nontrivial++
		}
	}
	if nontrivial < len(exprs)/2 {
		t.Fatalf("only %d of %d predicates split the events: the generator is too weak", nontrivial, len(exprs))
	}
	t.Logf("%d predicates, %d selecting a proper subset", len(exprs), nontrivial)
}

// FuzzWhereSQL fuzzes predicates: whatever ParseWhere accepts, the SQL it
// renders must select in DuckDB exactly the lake rows Match accepts in Go
// (compared row by row, by sequence).
func FuzzWhereSQL(f *testing.F) {
	s := wpStream(f)
	r := rand.New(rand.NewPCG(5, 55))
	evs, _, src := wpEvents(f, s, r, 400)
	g := wpGen{r}
	for i := 0; i < 12; i++ {
		f.Add(g.expr(r.IntN(4)))
	}
	f.Add("not (city in ('Paris', '') or fare >= 2.5) and booked is not null")
	f.Add("pax = 1e0 or pax > 1e300 or fare < -1e-300")
	db, err := sql.Open("duckdb", "")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	if _, err := db.Exec("CREATE TABLE ev AS SELECT * FROM " + src); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		p, err := logic.ParseWhere(expr, s)
		if err != nil {
			return
		}
		var want []int64
		for i := range evs {
			if p.Match(&evs[i]) {
				want = append(want, int64(i+1))
			}
		}
		rows, err := db.Query("SELECT _seq FROM ev WHERE " + p.SQL() + " ORDER BY _seq")
		if err != nil {
			t.Fatalf("%q: DuckDB refuses the rendered SQL: %v\n%s", expr, err, p.SQL())
		}
		defer rows.Close()
		var got []int64
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				t.Fatal(err)
			}
			got = append(got, seq)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%q: %v\n%s", expr, err, p.SQL())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%q: DuckDB selects %d rows, Match %d\nSQL: %s", expr, len(got), len(want), p.SQL())
		}
	})
}

type wpCell struct {
	window int64
	group  string
}

// TestViewSQLMatchesFold: the batch SQL of a hopping view with a where
// clause over the lake equals folding the same events with logic.Delta.
func TestViewSQLMatchesFold(t *testing.T) {
	s := wpStream(t)
	r := rand.New(rand.NewPCG(99, 1))
	evs, arrivals, src := wpEvents(t, s, r, 2500)
	db := storagetest.DuckDB(t)
	def := logic.ViewDef{
		Stream: "trips", Window: 20 * time.Second, Hop: 5 * time.Second, GroupBy: []string{"city", "card"},
		Where: "(fare > 2.5 or pax is null) and city not in ('paris') and ts < '2024-05-02T00:01:30Z'",
		Measures: []logic.MeasureDef{
			{Name: "n", Expr: "count()"}, {Name: "total", Expr: "sum(fare)"}, {Name: "lo", Expr: "min(pax)"},
			{Name: "hi", Expr: "max(fare)"}, {Name: "avg_pax", Expr: "avg(pax)"},
		},
	}
	v, err := logic.NewView("trips_hop", def, s)
	if err != nil {
		t.Fatal(err)
	}
	cutoff := arrivals[len(arrivals)*3/4] // only the first 3/4 count
	d := v.NewDelta()
	folded := 0
	for i := range evs {
		if arrivals[i] < cutoff {
			d.Fold(0, &evs[i])
			folded++
		}
	}
	want := map[wpCell][]float64{}
	for k, st := range d.Cells {
		want[wpCell{k.Window, k.Group}] = st.Num
	}
	if len(want) < 50 {
		t.Fatalf("only %d cells: the test data is too thin", len(want))
	}

	rows, err := db.Query(v.SQL(src, cutoff))
	if err != nil {
		t.Fatalf("%v\n%s", err, v.SQL(src, cutoff))
	}
	defer rows.Close()
	nd := len(v.Dims)
	vals := make([]any, 1+nd+v.NumSlots)
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	got := map[wpCell][]float64{}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		dims := make([]logic.Value, nd)
		for i := range dims {
			if dims[i], err = v.DimValue(i, vals[1+i]); err != nil {
				t.Fatal(err)
			}
		}
		st := make([]float64, v.NumSlots)
		for i := range st {
			switch x := vals[1+nd+i].(type) {
			case nil:
				st[i] = math.NaN()
			case float64:
				st[i] = x
			default:
				t.Fatalf("slot %d: %T", i, x)
			}
		}
		got[wpCell{vals[0].(int64), v.GroupKey(dims)}] = st
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("SQL gives %d cells, Fold %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Fatalf("cell %+v missing from SQL", k)
		}
		for i := range w {
			if math.IsNaN(w[i]) != math.IsNaN(g[i]) || (!math.IsNaN(w[i]) && math.Abs(w[i]-g[i]) > 1e-9*math.Max(1, math.Abs(w[i]))) {
				t.Fatalf("cell %+v slot %d: SQL %v, Fold %v", k, i, g, w)
			}
		}
		// Finalized answers agree too (avg = sum/count etc.).
		fa, fb := v.Finalize(&logic.State{Num: w}), v.Finalize(&logic.State{Num: g})
		if fmt.Sprint(fa[0], fa[2]) != fmt.Sprint(fb[0], fb[2]) {
			t.Fatalf("cell %+v: finalized %v vs %v", k, fa, fb)
		}
	}

	// Independent check of the counts: brute-force window enumeration.
	p := v.Predicate()
	count := map[wpCell]float64{}
	for i := range evs {
		if arrivals[i] >= cutoff || !p.Match(&evs[i]) {
			continue
		}
		ev := evs[i]
		g := v.GroupKey([]logic.Value{ev.Values[s.FieldIndex("city")], ev.Values[s.FieldIndex("card")]})
		for w := ev.Time - ev.Time%5000 - 20000; w <= ev.Time; w += 5000 {
			if w <= ev.Time && ev.Time < w+20000 {
				count[wpCell{w, g}]++
			}
		}
	}
	if len(count) != len(want) {
		t.Fatalf("brute force gives %d cells, Fold %d", len(count), len(want))
	}
	for k, c := range count {
		if want[k] == nil || want[k][v.Measures[0].Off] != c { // measure 0 is count()
			t.Fatalf("cell %+v: brute-force count %v, Fold %v", k, c, want[k])
		}
	}
	t.Logf("%d events folded, %d cells", folded, len(want))
}
