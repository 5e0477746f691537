package logic_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

// randKey draws a key from small ranges, so that keys often tie in some
// components and differ only in later ones.
func randKey(r *rand.Rand) logic.PickKey {
	return logic.PickKey{Time: r.Int64N(5) - 2 + []int64{0, math.MaxInt64 - 10, math.MinInt64 + 10}[r.IntN(3)],
		LogPos: logic.LogPos{Arrival: r.Int64N(4) - 1, Part: r.IntN(3), Seq: []uint64{0, 1, 2, math.MaxUint64}[r.IntN(4)], Index: r.IntN(3)}}
}

// TestPickKeyBytesOrder: the encoded key's bytes, compared as unsigned
// bytes (what the speed store's commit script does), order keys as
// PickKey.Compare does, which is the lexicographic order of (time,
// arrival, partition, sequence, index) — checked here on the fields
// directly; and the encoding reads back.
func TestPickKeyBytesOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sign := func(less bool) int {
		if less {
			return -1
		}
		return 1
	}
	lexi := func(a, b logic.PickKey) int {
		switch {
		case a.Time != b.Time:
			return sign(a.Time < b.Time)
		case a.Arrival != b.Arrival:
			return sign(a.Arrival < b.Arrival)
		case a.Part != b.Part:
			return sign(a.Part < b.Part)
		case a.Seq != b.Seq:
			return sign(a.Seq < b.Seq)
		case a.Index != b.Index:
			return sign(a.Index < b.Index)
		}
		return 0
	}
	val := logic.Value{Kind: logic.TypeInt, I: 7}
	for i := 0; i < 20000; i++ {
		a, b := randKey(r), randKey(r)
		ea := logic.AppendPick(nil, logic.Pick{Key: a, Val: val})
		eb := logic.AppendPick(nil, logic.Pick{Key: b, Val: val})
		want := lexi(a, b)
		if got := a.Compare(b); got != want {
			t.Fatalf("%+v vs %+v: Compare %d, want %d", a, b, got, want)
		}
		if got := bytes.Compare(ea[:logic.PickKeySize], eb[:logic.PickKeySize]); got != want {
			t.Fatalf("%+v vs %+v: bytes compare %d, want %d", a, b, got, want)
		}
		back, err := logic.DecodePick(ea)
		if err != nil || back.Key != a || back.Val != val {
			t.Fatalf("%+v: read back %+v, %v", a, back, err)
		}
	}
}

// TestPickValuesReadBack: every kind of value survives the encoding
// bit for bit; broken encodings are refused, not misread.
func TestPickValuesReadBack(t *testing.T) {
	key := logic.PickKey{Time: 1714600000000, LogPos: logic.LogPos{Arrival: 1714600000123, Part: 2, Seq: 99, Index: 3}}
	vals := []logic.Value{
		{Kind: logic.TypeString, S: ""}, {Kind: logic.TypeString, S: "Zürich\x00\x1e\x1f"},
		{Kind: logic.TypeInt, I: math.MinInt64}, {Kind: logic.TypeInt, I: math.MaxInt64}, {Kind: logic.TypeInt, I: -1},
		{Kind: logic.TypeFloat, F: math.Copysign(0, -1)}, {Kind: logic.TypeFloat, F: math.MaxFloat64}, {Kind: logic.TypeFloat, F: 0.1},
		{Kind: logic.TypeBool, I: 1}, {Kind: logic.TypeBool}, {Kind: logic.TypeTime, I: logic.MaxTimeMs},
	}
	for _, x := range vals {
		b := logic.AppendPick(nil, logic.Pick{Key: key, Val: x})
		p, err := logic.DecodePick(b)
		if err != nil {
			t.Fatalf("%+v: %v", x, err)
		}
		if p.Key != key || p.Val.Kind != x.Kind || p.Val.S != x.S || p.Val.I != x.I || math.Float64bits(p.Val.F) != math.Float64bits(x.F) {
			t.Fatalf("%+v read back as %+v", x, p)
		}
		for _, cut := range []int{1, logic.PickKeySize, logic.PickKeySize + 1} {
			if x.Kind == logic.TypeString && cut == logic.PickKeySize+1 {
				continue // a string may be empty
			}
			if _, err := logic.DecodePick(b[:cut]); err == nil {
				t.Fatalf("%+v cut to %d bytes: no error", x, cut)
			}
		}
	}
	if p, err := logic.DecodePick(nil); err != nil || !p.Empty() {
		t.Fatalf("empty encoding: %+v, %v", p, err)
	}
	if b := logic.AppendPick([]byte("x"), logic.Pick{}); string(b) != "x" {
		t.Fatalf("empty pick appended %q", b)
	}
	bad := logic.AppendPick(nil, logic.Pick{Key: key, Val: logic.Value{Kind: logic.TypeInt, I: 1}})
	bad[logic.PickKeySize] = 99
	if _, err := logic.DecodePick(bad); err == nil {
		t.Fatal("unknown kind read")
	}
}

// TestMergePickIsAMonoid: merging picks in any order and grouping gives
// the pick of the greatest (last) or least (first) key, found here by
// sorting; the empty pick changes nothing.
func TestMergePickIsAMonoid(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 2000; trial++ {
		n := 1 + r.IntN(12)
		picks := make([]logic.Pick, n)
		seen := map[logic.PickKey]bool{}
		for i := range picks {
			if r.IntN(4) == 0 {
				continue // empty
			}
			k := randKey(r)
			for seen[k] {
				k = randKey(r)
			}
			seen[k] = true
			picks[i] = logic.Pick{Key: k, Val: logic.Value{Kind: logic.TypeInt, I: int64(i)}}
		}
		for _, last := range []bool{true, false} {
			var full []logic.Pick
			for _, p := range picks {
				if !p.Empty() {
					full = append(full, p)
				}
			}
			var want logic.Pick
			if len(full) > 0 {
				slices.SortFunc(full, func(a, b logic.Pick) int { return a.Key.Compare(b.Key) })
				want = full[0]
				if last {
					want = full[len(full)-1]
				}
			}
			// A random grouping: split, merge each half, merge the halves
			// in a random order.
			perm := r.Perm(n)
			cut := r.IntN(n + 1)
			var a, b logic.Pick
			for _, i := range perm[:cut] {
				logic.MergePick(&a, picks[i], last)
			}
			for _, i := range perm[cut:] {
				logic.MergePick(&b, picks[i], last)
			}
			if r.IntN(2) == 0 {
				a, b = b, a
			}
			logic.MergePick(&a, b, last)
			logic.MergePick(&a, logic.Pick{}, last)
			if a != want {
				t.Fatalf("last=%v: merged %+v, want %+v", last, a, want)
			}
		}
	}
}

// pickEvent is an event as TestLastFirstFold knows it.
type pickEvent struct {
	ts   int64
	pos  logic.LogPos
	vals map[string]any // nil = absent
}

// TestLastFirstFold: last and first of every field type, in a view with
// other measures, folded at log positions into deltas of several
// partitions and epochs, merged in random order (and through their
// encoding), answer the value of the latest (earliest) event with a value
// — times coarse enough that many tie, so the log position decides —
// computed here by sorting each window's events.
func TestLastFirstFold(t *testing.T) {
	s, err := logic.NewStream("s", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "g": logic.TypeString, "name": logic.TypeString, "x": logic.TypeFloat,
		"n": logic.TypeInt, "ok": logic.TypeBool, "at": logic.TypeTime}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defs := []logic.MeasureDef{
		{Name: "n_events", Expr: "count()"},
		{Name: "last_name", Expr: "last(name)"}, {Name: "first_name", Expr: "first(name)"},
		{Name: "last_x", Expr: "last(x)"}, {Name: "first_x", Expr: "first(x)"}, {Name: "sum_x", Expr: "sum(x)"},
		{Name: "last_n", Expr: "last(n)"}, {Name: "first_ok", Expr: "first(ok)"}, {Name: "last_ok", Expr: "last(ok)"},
		{Name: "last_at", Expr: "last(at)"}, {Name: "first_ts", Expr: "first(ts)"}, {Name: "last_name_again", Expr: "last( name )"},
	}
	v, err := logic.NewView("v", logic.ViewDef{Window: 10 * time.Second, GroupBy: []string{"g"}, Measures: defs}, s)
	if err != nil {
		t.Fatal(err)
	}
	if v.Picks() != 9 {
		t.Fatalf("%d picks, want 9 (last(name) twice shares one)", v.Picks())
	}
	for i, m := range v.Measures {
		if m.Pick < 0 && (m.Kind == logic.Last || m.Kind == logic.First) || !m.Exact() {
			t.Fatalf("measure %s: pick %d, exact %v", m.Name, m.Pick, m.Exact())
		}
		if m.Kind == logic.Last || m.Kind == logic.First {
			if want := s.Fields[s.FieldIndex(m.Field)].Type; m.ResultType() != want {
				t.Fatalf("measure %d %s: result type %s, want %s", i, m.Name, m.ResultType(), want)
			}
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	for trial := 0; trial < 30; trial++ {
		var evs []pickEvent
		seq := [3]uint64{}
		for i, n := 0, 50+r.IntN(300); i < n; i++ {
			p := r.IntN(3)
			seq[p]++
			e := pickEvent{ts: base + 1000*r.Int64N(40), pos: logic.LogPos{Arrival: base + 100*r.Int64N(5), Part: p, Seq: seq[p], Index: r.IntN(3)}, vals: map[string]any{}}
			if r.IntN(5) > 0 {
				e.vals["g"] = []string{"a", "b"}[r.IntN(2)]
			}
			maybe := func(name string, x any) {
				if r.IntN(3) > 0 {
					e.vals[name] = x
				}
			}
			maybe("name", fmt.Sprint("n", i))
			maybe("x", float64(r.IntN(100))/4)
			maybe("n", int64(i))
			maybe("ok", r.IntN(2) == 0)
			maybe("at", base+int64(i))
			evs = append(evs, e)
		}
		// Fold into a delta per partition, each event in an epoch of its
		// arrival; in a random order.
		deltas := []*logic.Delta{v.NewDelta(), v.NewDelta(), v.NewDelta()}
		for _, i := range r.Perm(len(evs)) {
			e := evs[i]
			raw := map[string]any{"ts": e.ts}
			for k, x := range e.vals {
				raw[k] = x
			}
			b, _ := json.Marshal(raw)
			ev, _, err := s.Prepare(b, e.ts)
			if err != nil {
				t.Fatal(err)
			}
			deltas[e.pos.Part].FoldAt(e.pos.Arrival/200*200, e.pos, &ev)
		}
		// Merge every cell of a window and group, in a random order, some
		// through the batch view encoding.
		merged := map[logic.CellKey]*logic.State{}
		var cells []logic.State
		var keys []logic.CellKey
		for _, d := range deltas {
			for k, c := range d.Cells {
				st := c.State(v)
				if r.IntN(2) == 0 {
					back := v.NewState()
					if err := v.DecodeSketches(&back, st.EncodeSketches()); err != nil {
						t.Fatal(err)
					}
					copy(back.Num, st.Num)
					st = back
				}
				if err := v.CheckState(st); err != nil {
					t.Fatal(err)
				}
				cells, keys = append(cells, st), append(keys, logic.CellKey{Window: k.Window, Group: k.Group})
			}
		}
		for _, i := range r.Perm(len(cells)) {
			k := keys[i]
			if merged[k] == nil {
				st := v.NewState()
				merged[k] = &st
			}
			v.MergeState(merged[k], cells[i])
		}
		// Independent answers.
		type cell struct {
			w int64
			g any
		}
		byCell := map[cell][]pickEvent{}
		for _, e := range evs {
			c := cell{e.ts / 10000 * 10000, e.vals["g"]}
			byCell[c] = append(byCell[c], e)
		}
		if len(byCell) != len(merged) {
			t.Fatalf("%d cells, want %d", len(merged), len(byCell))
		}
		for k, st := range merged {
			dims, err := v.DecodeGroup(k.Group)
			if err != nil {
				t.Fatal(err)
			}
			es := byCell[cell{k.Window, dims[0].Any()}]
			if es == nil {
				t.Fatalf("unexpected cell %+v", k)
			}
			got := v.Finalize(st)
			for i, m := range v.Measures {
				if m.Kind != logic.Last && m.Kind != logic.First {
					continue
				}
				want := pickDirect(es, m.Field, m.Kind == logic.Last)
				if !sameFinal(got[i], want) {
					t.Fatalf("trial %d cell %s %v: %s = %v (%T), want %v (%T)", trial, logic.FormatTime(k.Window), dims[0].Any(), m.Name, got[i], got[i], want, want)
				}
			}
		}
	}
}

// pickDirect is the value of field of the latest (last) or earliest event
// with one, by sorting the events on (time, arrival, partition, sequence,
// index); nil when none has one. Times come back as time.Time.
func pickDirect(es []pickEvent, field string, last bool) any {
	var with []pickEvent
	for _, e := range es {
		if field == "ts" || e.vals[field] != nil {
			with = append(with, e)
		}
	}
	if len(with) == 0 {
		return nil
	}
	less := func(a, b pickEvent) bool {
		ka := []int64{a.ts, a.pos.Arrival, int64(a.pos.Part), int64(a.pos.Seq), int64(a.pos.Index)}
		kb := []int64{b.ts, b.pos.Arrival, int64(b.pos.Part), int64(b.pos.Seq), int64(b.pos.Index)}
		return slices.Compare(ka, kb) < 0
	}
	best := with[0]
	for _, e := range with[1:] {
		if last && less(best, e) || !last && less(e, best) {
			best = e
		}
	}
	switch field {
	case "ts":
		return time.UnixMilli(best.ts).UTC()
	case "at":
		return time.UnixMilli(best.vals["at"].(int64)).UTC()
	}
	return best.vals[field]
}

func sameFinal(got, want any) bool {
	if w, ok := want.(time.Time); ok {
		g, ok := got.(time.Time)
		return ok && g.Equal(w) && g.Location() == time.UTC
	}
	return got == want
}

// TestPickDefinitions: last and first of one field are different
// measures (different definitions), and a view with them keeps its
// definition when its measures are renamed or reordered, like any other.
func TestPickDefinitions(t *testing.T) {
	s, err := logic.NewStream("s", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "x": logic.TypeString, "y": logic.TypeInt}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	def := func(ms ...logic.MeasureDef) string {
		v, err := logic.NewView("v", logic.ViewDef{Window: time.Minute, Measures: ms}, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.Definition()
	}
	a := def(logic.MeasureDef{Name: "a", Expr: "last(x)"}, logic.MeasureDef{Name: "b", Expr: "first(y)"})
	if b := def(logic.MeasureDef{Name: "z", Expr: "first(y)"}, logic.MeasureDef{Name: "w", Expr: "last(x)"}); a != b {
		t.Fatalf("renamed and reordered: %s, was %s", b, a)
	}
	if b := def(logic.MeasureDef{Name: "a", Expr: "first(x)"}, logic.MeasureDef{Name: "b", Expr: "first(y)"}); a == b {
		t.Fatal("last(x) and first(x) share a definition")
	}
	for _, bad := range []string{"last()", "last(x, y)", "first(nope)"} {
		if _, err := logic.NewView("v", logic.ViewDef{Window: time.Minute, Measures: []logic.MeasureDef{{Name: "m", Expr: bad}}}, s); err == nil {
			t.Fatalf("%s accepted", bad)
		}
	}
}

// FuzzDecodePick: DecodePick never panics, and what it reads encodes back
// to the same bytes (the encoding is canonical, so a pick stored by one
// layer reads the same in the other).
func FuzzDecodePick(f *testing.F) {
	key := logic.PickKey{Time: 1714600000000, LogPos: logic.LogPos{Arrival: 1714600000123, Part: 2, Seq: 99, Index: 3}}
	for _, x := range []logic.Value{{Kind: logic.TypeString, S: "Zürich"}, {Kind: logic.TypeFloat, F: -0.5}, {Kind: logic.TypeBool, I: 1}, {Kind: logic.TypeTime, I: 7}} {
		f.Add(logic.AppendPick(nil, logic.Pick{Key: key, Val: x}))
	}
	f.Add([]byte{})
	f.Add(make([]byte, logic.PickKeySize+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := logic.DecodePick(b)
		if err != nil {
			return
		}
		if got := logic.AppendPick(nil, p); !bytes.Equal(got, b) {
			t.Fatalf("%x read as %+v encodes as %x", b, p, got)
		}
	})
}
