package logic

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func defStream(t *testing.T, fields map[string]FieldType, pii map[string]PIIMode) *Stream {
	t.Helper()
	if fields == nil {
		fields = map[string]FieldType{"ts": TypeTime, "country": TypeString, "device": TypeString, "amount": TypeFloat, "qty": TypeInt, "email": TypeString}
	}
	s, err := NewStream("orders", StreamDef{Time: "ts", Fields: fields, PII: pii}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func defView(t *testing.T, s *Stream, def ViewDef) *View {
	t.Helper()
	v, err := NewView("v", def, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var baseDef = ViewDef{Stream: "orders", Window: time.Minute, GroupBy: []string{"country"}, Where: "amount > 0",
	Measures: []MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "total", Expr: "sum(amount)"}, {Name: "hi", Expr: "max(amount)"},
		{Name: "lo", Expr: "min(amount)"}, {Name: "buyers", Expr: "count_distinct(email)"}, {Name: "p9", Expr: "quantile(amount, 0.9)"},
		{Name: "avg_qty", Expr: "avg(qty)"},
	}}

func withMeasures(def ViewDef, ms ...MeasureDef) ViewDef {
	def.Measures = ms
	return def
}

// TestDefinitionChangesWithMeaningOnly: every edit that changes what a
// view's state holds changes its definition; renaming and reordering
// measures, respacing an expression and declaring fields the view does not
// read do not.
func TestDefinitionChangesWithMeaningOnly(t *testing.T) {
	s := defStream(t, nil, nil)
	base := defView(t, s, baseDef).Definition()
	if len(base) != 16 {
		t.Fatalf("definition %q: want 16 hex digits", base)
	}
	same := map[string]ViewDef{}
	rev := append([]MeasureDef(nil), baseDef.Measures...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	same["reordered"] = withMeasures(baseDef, rev...)
	renamed := append([]MeasureDef(nil), baseDef.Measures...)
	renamed[1].Name = "revenue"
	same["renamed"] = withMeasures(baseDef, renamed...)
	spaced := append([]MeasureDef(nil), baseDef.Measures...)
	spaced[5].Expr = " quantile( amount ,0.90 ) "
	same["respaced"] = withMeasures(baseDef, spaced...)
	d := baseDef
	d.Where = "  amount>0 "
	same["where respaced"] = d
	d = baseDef
	d.Tier = "batch"
	same["batch tier"] = d
	for name, def := range same {
		if got := defView(t, s, def).Definition(); got != base {
			t.Errorf("%s: definition %s, want %s (unchanged)", name, got, base)
		}
	}
	wider := defStream(t, map[string]FieldType{"ts": TypeTime, "country": TypeString, "device": TypeString, "amount": TypeFloat, "qty": TypeInt, "email": TypeString, "extra": TypeBool}, nil)
	if got := defView(t, wider, baseDef).Definition(); got != base {
		t.Errorf("a new field the view does not read: definition %s, want %s", got, base)
	}
	otherType := defStream(t, map[string]FieldType{"ts": TypeTime, "country": TypeString, "device": TypeInt, "amount": TypeFloat, "qty": TypeInt, "email": TypeString}, nil)
	if got := defView(t, otherType, baseDef).Definition(); got != base {
		t.Errorf("a type change of a field the view does not read: definition %s, want %s", got, base)
	}

	// Swapping two expressions between their names is a rename: the state
	// holds max(amount) and min(amount) as before, and each name now reads
	// the other one.
	swapped := append([]MeasureDef(nil), baseDef.Measures...)
	swapped[2].Expr, swapped[3].Expr = swapped[3].Expr, swapped[2].Expr // hi: min, lo: max
	if got := defView(t, s, withMeasures(baseDef, swapped...)).Definition(); got != base {
		t.Errorf("min and max swapped between their names: definition %s, want %s", got, base)
	}

	changed := map[string]ViewDef{}
	other := append([]MeasureDef(nil), baseDef.Measures...)
	other[1].Expr = "sum(qty)"
	changed["sum of another field"] = withMeasures(baseDef, other...)
	changed["a measure added"] = withMeasures(baseDef, append(append([]MeasureDef(nil), baseDef.Measures...), MeasureDef{Name: "m", Expr: "max(qty)"})...)
	changed["a measure removed"] = withMeasures(baseDef, baseDef.Measures[1:]...)
	q := append([]MeasureDef(nil), baseDef.Measures...)
	q[5].Expr = "quantile(amount, 0.95)"
	changed["another quantile"] = withMeasures(baseDef, q...)
	d = baseDef
	d.Window = 5 * time.Minute
	changed["window"] = d
	d = baseDef
	d.Hop = 30 * time.Second
	changed["hop"] = d
	d = baseDef
	d.GroupBy = []string{"country", "device"}
	changed["group_by"] = d
	d = baseDef
	d.GroupBy = nil
	changed["no dimensions"] = d
	d = baseDef
	d.Where = "amount >= 0"
	changed["where"] = d
	d = baseDef
	d.Where = ""
	changed["no where"] = d
	seen := map[string]string{base: "base"}
	for name, def := range changed {
		got := defView(t, s, def).Definition()
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: definition %s, the same as %s", name, got, prev)
		}
		seen[got] = name
	}
	for name, st := range map[string]*Stream{
		"type of a dimension":         defStream(t, map[string]FieldType{"ts": TypeTime, "country": TypeInt, "device": TypeString, "amount": TypeFloat, "qty": TypeInt, "email": TypeString}, nil),
		"type of a measured field":    defStream(t, map[string]FieldType{"ts": TypeTime, "country": TypeString, "device": TypeString, "amount": TypeFloat, "qty": TypeFloat, "email": TypeString}, nil),
		"masking of a measured field": defStream(t, nil, map[string]PIIMode{"email": PIIRedact}),
	} {
		got := defView(t, st, baseDef).Definition()
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: definition %s, the same as %s", name, got, prev)
		}
		seen[got] = name
	}
	if k := defView(t, s, baseDef).StateKey(); k != "v@"+base {
		t.Fatalf("state key %q", k)
	}
	if n, d := SplitStateKey("v@" + base); n != "v" || d != base {
		t.Fatalf("split: %q %q", n, d)
	}
	if n, d := SplitStateKey("old_view"); n != "old_view" || d != "" {
		t.Fatalf("split of a key without definition: %q %q", n, d)
	}
}

// TestReorderedMeasuresReadTheSameState: state folded under one order of
// the measures, read under a reordered and renamed declaration (the same
// definition), answers every measure by its meaning, and the state layout
// is the same slot for slot.
func TestReorderedMeasuresReadTheSameState(t *testing.T) {
	s := defStream(t, nil, nil)
	a := defView(t, s, baseDef)
	perm := rand.New(rand.NewPCG(7, 7)).Perm(len(baseDef.Measures))
	var ms []MeasureDef
	for _, i := range perm {
		m := baseDef.Measures[i]
		m.Name = "x_" + m.Name
		ms = append(ms, m)
	}
	b := defView(t, s, withMeasures(baseDef, ms...))
	if a.Definition() != b.Definition() || a.NumSlots != b.NumSlots {
		t.Fatalf("definitions %s %s, slots %d %d", a.Definition(), b.Definition(), a.NumSlots, b.NumSlots)
	}
	r := rand.New(rand.NewPCG(1, 2))
	d := a.NewDelta()
	for i := range 500 {
		raw := fmt.Sprintf(`{"ts":%d,"country":"c%d","amount":%g,"qty":%d,"email":"u%d@x"}`,
			1_700_000_000_000+int64(r.IntN(60_000)), r.IntN(2), float64(r.IntN(20000))/100-20, r.IntN(9), r.IntN(40))
		ev, _, err := s.Prepare([]byte(raw), 0)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		d.Fold(0, &ev)
	}
	for k, c := range d.Cells {
		st := c.State(a)
		va, vb := a.Finalize(&st), b.Finalize(&st)
		for i, m := range a.Measures {
			j := -1
			for jj, mb := range b.Measures {
				if mb.Name == "x_"+m.Name {
					j = jj
				}
			}
			if fmt.Sprint(va[i]) != fmt.Sprint(vb[j]) {
				t.Fatalf("cell %+v measure %s: %v under one order, %v under the other", k, m.Name, va[i], vb[j])
			}
		}
	}
}
