package speedstore

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

// packSlots: add, min, max (the shape of the ops the script merges).
var packSlots = []logic.Slot{{Op: logic.OpAdd}, {Op: logic.OpAdd}, {Op: logic.OpMin}, {Op: logic.OpMax}}

// TestPackedRoundTrip: appendPacked then mergePacked into an empty state
// gives back every value bit for bit (NaN stays an empty min/max; -0 in an
// add slot reads as 0 + -0 = 0, as logic merges it), and the script's
// format string matches the encoding's length.
func TestPackedRoundTrip(t *testing.T) {
	vals := []float64{0, math.Copysign(0, -1), 1, -1.5, math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64,
		math.SmallestNonzeroFloat64, 1 << 53, 1<<53 + 2, 0.1, -123456789.0000001}
	for _, a := range vals {
		for _, b := range vals {
			num := []float64{a, b, a, b}
			val := string(appendPacked(nil, num))
			if len(val) != 8*len(packSlots) {
				t.Fatalf("packed length %d", len(val))
			}
			got := []float64{0, 0, math.NaN(), math.NaN()}
			if !mergePacked(packSlots, got, val) {
				t.Fatal("value refused")
			}
			for i, x := range num {
				want := x
				if packSlots[i].Op == logic.OpAdd {
					want = 0 + x
				}
				if math.IsNaN(want) != math.IsNaN(got[i]) || !math.IsNaN(want) && math.Float64bits(got[i]) != math.Float64bits(want) {
					t.Fatalf("slot %d: %v (%#x) read back as %v (%#x)", i, x, math.Float64bits(x), got[i], math.Float64bits(got[i]))
				}
			}
		}
	}
	if string(appendOps(nil, packSlots)) != "aanx" {
		t.Fatalf("ops %q", appendOps(nil, packSlots))
	}
}

// FuzzMergePacked: any stored value is either refused (wrong length) or
// merged without a panic; an empty min/max (NaN) never replaces a value.
func FuzzMergePacked(f *testing.F) {
	f.Add(string(appendPacked(nil, []float64{1, 2, 3, 4})))
	f.Add(string(appendPacked(nil, []float64{0, 0, math.NaN(), math.NaN()})))
	f.Add("")
	f.Add("short")
	f.Fuzz(func(t *testing.T, val string) {
		num := []float64{1, 1, 5, 5}
		ok := mergePacked(packSlots, num, val)
		if ok != (len(val) == 8*len(packSlots)) {
			t.Fatalf("length %d accepted=%v", len(val), ok)
		}
		if math.IsNaN(num[2]) || math.IsNaN(num[3]) {
			t.Fatalf("an empty min/max replaced a value: %v", num)
		}
	})
}

// BenchmarkAppendDelta encodes one commit's arguments: 2000 events folded
// into 5 views (1 minute to 1 day windows, 50 groups, 5 measures) with
// event times over 24 hours, about 5000 cells.
func BenchmarkAppendDelta(b *testing.B) {
	st := New(nil, "ns")
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt}}, []byte("k"))
	if err != nil {
		b.Fatal(err)
	}
	var ds []*logic.Delta
	for _, w := range []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 24 * time.Hour} {
		v, err := logic.NewView("bench", logic.ViewDef{Stream: "orders", Window: w, GroupBy: []string{"country"}, Measures: []logic.MeasureDef{
			{Name: "n", Expr: "count()"}, {Name: "rev", Expr: "sum(amount)"}, {Name: "avg", Expr: "avg(amount)"},
			{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(items)"}}}, s)
		if err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(5, 6))
		d := v.NewDelta()
		for j := 0; j < 2000; j++ {
			vals := make([]logic.Value, len(s.Fields))
			ts := rng.Int64N(24 * 3600_000)
			vals[s.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: ts}
			vals[s.FieldIndex("country")] = logic.Value{Kind: logic.TypeString, S: fmt.Sprint("c", rng.IntN(50))}
			vals[s.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: float64(rng.IntN(100000)) / 100}
			vals[s.FieldIndex("items")] = logic.Value{Kind: logic.TypeInt, I: int64(rng.IntN(9))}
			ev := logic.Event{Time: ts, Values: vals}
			d.Fold(0, &ev)
		}
		ds = append(ds, d)
	}
	b.ReportAllocs()
	for b.Loop() {
		var a argBuf
		for _, d := range ds {
			st.appendDelta(&a, "orders", 0, d)
		}
		_ = a.args()
	}
}
