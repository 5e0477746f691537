package batchviews

import (
	"context"
	"math"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/logic"
)

// sketchView has every kind of state: numeric slots, an HLL, a quantile
// sketch.
func sketchView(t *testing.T) *logic.View {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "country": logic.TypeString, "user": logic.TypeString, "amount": logic.TypeFloat}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView("v", logic.ViewDef{Stream: "orders", Window: time.Minute, GroupBy: []string{"country"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "lo", Expr: "min(amount)"}, {Name: "users", Expr: "count_distinct(user)"}, {Name: "p90", Expr: "quantile(amount, 0.9)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sketchRows(t *testing.T, v *logic.View) []Row {
	t.Helper()
	var rows []Row
	for w := int64(0); w < 5; w++ {
		st := v.NewState()
		for i := range st.Num {
			st.Num[i] = float64(w*10 + int64(i))
		}
		st.Num[len(st.Num)-1] = math.NaN() // an empty min
		h := &logic.HLL{}
		for i := range 50 + int(w)*600 { // sparse and dense
			h.Add([]byte{byte(i), byte(i >> 8), byte(w)})
		}
		st.HLL[0] = h
		st.Q[0] = logic.QuantileSketch{}
		st.Q[0].Add(float64(w) + 1.5)
		if w%2 == 0 {
			st.Exact = []float64{float64(w), 1, float64(w * 7), 2.5}
		}
		rows = append(rows, Row{Window: w * 60_000, Group: v.GroupKey([]logic.Value{{Kind: logic.TypeString, S: "DE"}}), State: st})
	}
	return rows
}

// TestViewFileRoundTrip: rows with every kind of state come back equal
// from the flat layout, and files of the earlier (nested) layout still load.
func TestViewFileRoundTrip(t *testing.T) {
	v := sketchView(t)
	rows := sketchRows(t, v)
	check := func(label string, got []Row) {
		t.Helper()
		if len(got) != len(rows) {
			t.Fatalf("%s: %d rows, want %d", label, len(got), len(rows))
		}
		for i := range rows {
			w, g := rows[i], got[i]
			if g.Window != w.Window || g.Group != w.Group || !sameFloats(g.State.Num, w.State.Num) || !reflect.DeepEqual(g.State.Exact, w.State.Exact) ||
				g.State.HLL[0].Count() != w.State.HLL[0].Count() || !reflect.DeepEqual(g.State.Q[0], w.State.Q[0]) {
				t.Fatalf("%s: row %d:\n got %+v\nwant %+v", label, i, g, w)
			}
		}
	}

	st, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ver := &Version{ID: NewID(), Views: map[string]ViewVersion{"v": {Cutoff: 1, Definition: v.Definition()}}}
	if err := st.Publish(ver, map[string][]Row{"v": rows}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Rows(context.Background(), ver, v, 0, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	check("flat", got)

	old := make([]listFileRow, len(rows))
	for i, r := range rows {
		old[i] = listFileRow{Window: r.Window, Group: r.Group, State: r.State.Num, Sketches: r.State.EncodeSketches(), Exact: r.State.Exact}
	}
	path := filepath.Join(t.TempDir(), "old.parquet")
	if err := parquet.WriteFile(path, old); err != nil {
		t.Fatal(err)
	}
	got, err = readViewFile(path, v)
	if err != nil {
		t.Fatal(err)
	}
	check("nested", got)
}

func sameFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
			return false
		}
	}
	return true
}
