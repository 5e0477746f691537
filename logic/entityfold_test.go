package logic

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func entityForTest(t *testing.T) *Entity {
	t.Helper()
	s, err := NewStream("orders", StreamDef{Time: "ts", Fields: map[string]FieldType{
		"ts": TypeTime, "customer": TypeString, "amount": TypeFloat, "items": TypeInt, "country": TypeString,
	}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEntity("customer", EntityDef{Stream: "orders", Key: "customer", Features: []FeatureDef{
		{Name: "n_1h", Measure: "count()", Over: time.Hour},
		{Name: "n_items", Measure: "count(items)", Over: 2 * time.Hour},
		{Name: "spend", Measure: "sum(amount)", Over: 3 * time.Hour},
		{Name: "items_sum", Measure: "sum(items)", Over: 3 * time.Hour},
		{Name: "avg", Measure: "avg(amount)", Over: time.Hour},
		{Name: "lo", Measure: "min(amount)", Over: time.Hour},
		{Name: "hi", Measure: "max(items)", Over: 2 * time.Hour},
		{Name: "countries", Measure: "count_distinct(country)", Over: 2 * time.Hour},
		{Name: "p50", Measure: "quantile(amount, 0.5)", Over: 3 * time.Hour},
		{Name: "last_country", Measure: "last(country)"},
		{Name: "first_items", Measure: "first(items)"},
	}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestEntityEventsRoundTrip: encodings concatenate and decode to what was
// encoded, nulls and every kind included.
func TestEntityEventsRoundTrip(t *testing.T) {
	e := entityForTest(t)
	if got := e.Fields(); !slices.Equal(got, []string{"amount", "country", "items"}) {
		t.Fatalf("fields %v", got)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var want []EntityEvent
	var b []byte
	for i := range 200 {
		ev := EntityEvent{Time: r.Int64N(1e13) - 5e12, Arrival: r.Int64N(1e13), Part: r.IntN(8), Seq: r.Uint64(), Idx: i,
			Values: []Value{{Kind: TypeFloat, F: r.NormFloat64()}, {Kind: TypeString, S: string(rune('a' + i%26))}, {Kind: TypeInt, I: r.Int64()}}}
		if i%7 == 0 {
			ev.Values[i%3] = Value{}
		}
		want = append(want, ev)
		b = e.AppendEvent(b, &ev)
	}
	got, err := e.DecodeEvents(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Compare(&want[i]) != 0 || !slices.Equal(got[i].Values, want[i].Values) {
			t.Fatalf("event %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := e.DecodeEvents(nil, b[:len(b)-1]); err == nil {
		t.Fatal("a cut encoding decoded")
	}
	// The same encoding read from a string (a Redis reply) decodes alike.
	fromString, _, err := e.DecodeEventsString(nil, nil, string(b))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if fromString[i].Compare(&want[i]) != 0 || !slices.Equal(fromString[i].Values, want[i].Values) {
			t.Fatalf("event %d from a string: %+v, want %+v", i, fromString[i], want[i])
		}
	}
	if _, _, err := e.DecodeEventsString(nil, nil, string(b[:len(b)-1])); err == nil {
		t.Fatal("a cut encoding decoded from a string")
	}
}

// TestVarints: the decoder's varints read what encoding/binary writes,
// and refuse what it refuses.
func TestVarints(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		x := r.Int64() >> r.IntN(64)
		if r.IntN(2) == 0 {
			x = -x
		}
		b := binary.AppendVarint(nil, x)
		got, rest, ok := varint(string(b))
		want, n := binary.Varint(b)
		if !ok || got != want || n != len(b) || rest != "" {
			t.Fatalf("varint %d: got %d %v, binary says %d", x, got, ok, want)
		}
		u := r.Uint64() >> r.IntN(64)
		ub := binary.AppendUvarint(nil, u)
		if got, _, ok := uvarint(ub); !ok || got != u {
			t.Fatalf("uvarint %d: got %d %v", u, got, ok)
		}
	}
	for _, bad := range [][]byte{{}, {0x80}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}} {
		if _, _, ok := uvarint(bad); ok {
			t.Fatalf("uvarint read %x", bad)
		}
		if _, n := binary.Uvarint(bad); n > 0 {
			t.Fatalf("binary read %x", bad)
		}
	}
}

// TestEntityCompute checks every measure against a direct recomputation
// over random events, windows and as_of instants, with late arrivals.
func TestEntityCompute(t *testing.T) {
	e := entityForTest(t)
	r := rand.New(rand.NewPCG(3, 4))
	base := int64(1_700_000_000_000)
	for trial := range 300 {
		var evs []EntityEvent
		for i := range r.IntN(40) {
			tm := base + r.Int64N(4*3600_000)
			ev := EntityEvent{Time: tm, Arrival: tm + r.Int64N(3600_000), Seq: uint64(i), Values: []Value{
				{Kind: TypeFloat, F: float64(r.IntN(100))}, {Kind: TypeString, S: []string{"DE", "FR", "US"}[r.IntN(3)]}, {Kind: TypeInt, I: int64(r.IntN(5))}}}
			if r.IntN(5) == 0 {
				ev.Values[r.IntN(3)] = Value{}
			}
			if r.IntN(4) == 0 && i > 0 {
				ev.Time = evs[r.IntN(i)].Time // ties: the arrival (then the place) decides
			}
			evs = append(evs, ev)
		}
		asOf := base + r.Int64N(5*3600_000)
		arrivedBy := trial%2 == 0
		got := e.Compute(evs, asOf, arrivedBy)
		for fi, f := range e.Features {
			want := naiveFeature(f, evs, asOf, arrivedBy, e)
			if !sameValue(got[fi], want) {
				t.Fatalf("trial %d feature %s: %+v, want %+v", trial, f.Name, got[fi], want)
			}
		}
	}
}

func sameValue(a, b Value) bool {
	if a.Kind != b.Kind {
		return false
	}
	if a.Kind == TypeFloat {
		return math.Abs(a.F-b.F) <= 1e-9*math.Max(1, math.Abs(b.F))
	}
	return a == b
}

// naiveFeature is the feature computed the long way: filter, sort, read.
func naiveFeature(f Feature, evs []EntityEvent, asOf int64, arrivedBy bool, e *Entity) Value {
	var in []EntityEvent
	for _, ev := range evs {
		if ev.Time >= asOf || f.Over > 0 && ev.Time < asOf-f.Over.Milliseconds() || arrivedBy && ev.Arrival > asOf {
			continue
		}
		if f.Measure.Field != "" && ev.Values[slices.Index(e.Fields(), f.Measure.Field)].Null() {
			continue
		}
		in = append(in, ev)
	}
	pos := slices.Index(e.Fields(), f.Measure.Field)
	var xs []float64
	for _, ev := range in {
		if pos >= 0 {
			xs = append(xs, ev.Values[pos].Float())
		}
	}
	intType := f.Measure.ResultType() == TypeInt
	num := func(x float64) Value {
		if intType {
			return Value{Kind: TypeInt, I: int64(x)}
		}
		return Value{Kind: TypeFloat, F: x}
	}
	switch f.Measure.Kind {
	case Count:
		return Value{Kind: TypeInt, I: int64(len(in))}
	case CountDistinct:
		set := map[string]bool{}
		for _, ev := range in {
			set[ev.Values[pos].String()] = true
		}
		return Value{Kind: TypeInt, I: int64(len(set))}
	}
	if len(in) == 0 {
		return Value{}
	}
	slices.Sort(xs)
	var s float64
	for _, x := range xs {
		s += x
	}
	switch f.Measure.Kind {
	case Sum:
		return num(s)
	case Avg:
		return Value{Kind: TypeFloat, F: s / float64(len(xs))}
	case Min:
		return num(xs[0])
	case Max:
		return num(xs[len(xs)-1])
	case Quantile:
		rank := f.Measure.Q * float64(len(xs)-1)
		lo := math.Floor(rank)
		hi := math.Ceil(rank)
		return Value{Kind: TypeFloat, F: xs[int(lo)] + (rank-lo)*(xs[int(hi)]-xs[int(lo)])}
	}
	slices.SortFunc(in, func(a, b EntityEvent) int { return a.Compare(&b) })
	if f.Measure.Kind == Last {
		return in[len(in)-1].Values[pos]
	}
	return in[0].Values[pos]
}

// TestEntityDefinition: features over fields already read keep the
// definition; a new field read, or a longer keep, changes it.
func TestEntityDefinition(t *testing.T) {
	e := entityForTest(t)
	def := func(fs ...FeatureDef) string {
		x, err := NewEntity("customer", EntityDef{Stream: "orders", Key: "customer", Features: fs}, e.Stream)
		if err != nil {
			t.Fatal(err)
		}
		return x.Definition()
	}
	a := def(FeatureDef{Name: "s", Measure: "sum(amount)", Over: time.Hour})
	if b := def(FeatureDef{Name: "t", Measure: "max(amount)", Over: time.Hour}); a != b {
		t.Fatal("a measure over the same field changed the definition")
	}
	if b := def(FeatureDef{Name: "s", Measure: "sum(items)", Over: time.Hour}); a == b {
		t.Fatal("another field kept the definition")
	}
	if b := def(FeatureDef{Name: "s", Measure: "sum(amount)", Over: 48 * time.Hour}); a == b {
		t.Fatal("a longer over kept the definition")
	}
}
