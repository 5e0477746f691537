package logic_test

import (
	"cmp"
	"maps"
	"math"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

// TestOverflowIsNullAndNamed: a sum beyond what its type holds answers
// nil and is named by FinalizeRow, in the speed layer's fold and after a
// merge; sums that stay in range, and the measures that cannot overflow,
// answer their values. Which sums overflow is decided with exact big-number
// arithmetic.
func TestOverflowIsNullAndNamed(t *testing.T) {
	s, err := logic.NewStream("s", logic.StreamDef{Time: "ts",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "amount": logic.TypeFloat, "items": logic.TypeInt}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView("v", logic.ViewDef{Window: time.Minute, Measures: []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "revenue", Expr: "sum(amount)"}, {Name: "basket", Expr: "avg(amount)"},
		{Name: "hi", Expr: "max(amount)"}, {Name: "lo", Expr: "min(amount)"}, {Name: "items", Expr: "sum(items)"},
		{Name: "p50", Expr: "quantile(amount, 0.5)"},
	}}, s)
	if err != nil {
		t.Fatal(err)
	}
	const (
		revenue = 1
		basket  = 2
		hi      = 3
		lo      = 4
		items   = 5
		p50     = 6
	)
	for _, tc := range []struct {
		name    string
		amounts []float64
		items   []int64
	}{
		{"float sum overflows", []float64{1e308, 1e308}, []int64{1, 2}},
		{"float sum overflows downwards", []float64{-1.5e308, -1e308, 3}, nil},
		{"float sum in range", []float64{1e308, -1e308, 1e308}, nil},
		{"int sum overflows", []float64{1}, []int64{9e18, 9e18}},
		{"int sum overflows downwards", nil, []int64{-9e18, -9e18, 5}},
		{"int sum in range", nil, []int64{9e18, -9e18, 9e18}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := v.NewDelta()
			var evs []logic.Event
			for i := range max(len(tc.amounts), len(tc.items)) {
				vals := make([]logic.Value, len(s.Fields))
				if i < len(tc.amounts) {
					vals[s.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: tc.amounts[i]}
				}
				if i < len(tc.items) {
					vals[s.FieldIndex("items")] = logic.Value{Kind: logic.TypeInt, I: tc.items[i]}
				}
				evs = append(evs, logic.Event{Time: 1000, Values: vals})
			}
			// Each event in its own epoch: the cells merge like the speed
			// layer's and the batch layer's do.
			for i := range evs {
				d.Fold(int64(i)*10_000, &evs[i])
			}
			// Merged in the events' order: float addition is not
			// associative (1e308 + 1e308 - 1e308 overflows, 1e308 - 1e308 +
			// 1e308 does not).
			keys := slices.SortedFunc(maps.Keys(d.Cells), func(a, b logic.CellKey) int { return cmp.Compare(a.Epoch, b.Epoch) })
			st := v.NewState()
			for _, k := range keys {
				v.MergeState(&st, d.Cells[k].State(v))
			}
			vals, over := v.FinalizeRow(&st)

			floatSum, intSum := new(big.Float), new(big.Int)
			for _, a := range tc.amounts {
				floatSum.Add(floatSum, big.NewFloat(a))
			}
			for _, it := range tc.items {
				intSum.Add(intSum, big.NewInt(it))
			}
			exactF, _ := floatSum.Float64()
			wantOver := map[int]bool{}
			if len(tc.amounts) > 0 && math.IsInf(exactF, 0) {
				wantOver[revenue], wantOver[basket] = true, true
			}
			if len(tc.items) > 0 && !intSum.IsInt64() {
				wantOver[items] = true
			}
			named := map[int]bool{}
			for _, i := range over {
				named[i] = true
			}
			for i := range v.Measures {
				if named[i] != wantOver[i] {
					t.Fatalf("measure %s: overflow %v, want %v (values %v)", v.Measures[i].Name, named[i], wantOver[i], vals)
				}
				if named[i] && vals[i] != nil {
					t.Fatalf("measure %s overflowed but answers %v", v.Measures[i].Name, vals[i])
				}
				if v.Measures[i].Overflowed(&st) != named[i] || (named[i] && v.Measures[i].Finalize(&st) != nil) {
					t.Fatalf("measure %s: Overflowed and Finalize disagree with FinalizeRow", v.Measures[i].Name)
				}
			}
			if !wantOver[revenue] && len(tc.amounts) > 0 && math.Abs(vals[revenue].(float64)-exactF) > 1e-9*math.Abs(exactF)+1e292 {
				t.Fatalf("revenue %v, want %v", vals[revenue], exactF)
			}
			if !wantOver[items] && len(tc.items) > 0 && vals[items].(int64) != intSum.Int64() {
				t.Fatalf("items %v, want %v", vals[items], intSum)
			}
			if len(tc.amounts) > 0 {
				h, l := tc.amounts[0], tc.amounts[0]
				for _, a := range tc.amounts {
					h, l = max(h, a), min(l, a)
				}
				if vals[hi] != h || vals[lo] != l {
					t.Fatalf("max %v min %v, want %v %v", vals[hi], vals[lo], h, l)
				}
			}
			if len(tc.amounts) > 0 {
				// Every value is within 1.5e308: the sketch's estimate is
				// within 1% of the middle one, and does not overflow.
				sorted := append([]float64{}, tc.amounts...)
				slices.Sort(sorted)
				mid := sorted[len(sorted)/2]
				if len(sorted)%2 == 0 {
					mid = sorted[len(sorted)/2-1]/2 + sorted[len(sorted)/2]/2
				}
				if x, ok := vals[p50].(float64); !ok || math.Abs(x-mid) > 0.01*math.Abs(mid) {
					t.Fatalf("p50 %v, want %v within 1%%", vals[p50], mid)
				}
			}
			if vals[0] != int64(len(evs)) {
				t.Fatalf("count %v, want %d", vals[0], len(evs))
			}
		})
	}
}
