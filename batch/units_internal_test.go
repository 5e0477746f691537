package batch

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
)

// spanBrute is UnitSpan by enumeration: over every window start of a day
// (a multiple of the step), the last day its window reaches.
func spanBrute(w logic.Window, day time.Time) int {
	d := day.UnixMilli()
	step, size := w.Step().Milliseconds(), w.Size.Milliseconds()
	k := 0
	first := (d + step - 1) / step * step
	for s := first; s < d+dayMs; s += step {
		if off := int((s + size - 1 - d) / dayMs); off > k {
			k = off
		}
	}
	return k
}

func TestUnitSpan(t *testing.T) {
	cases := []struct {
		size, hop time.Duration
		want      int
	}{
		{10 * time.Second, 0, 0},
		{time.Hour, 0, 0},
		{24 * time.Hour, 0, 0},
		{7 * time.Minute, 0, 1}, // does not divide a day: a window straddles midnight
		{20 * time.Second, 5 * time.Second, 1},
		{time.Hour, 30 * time.Minute, 1},
		{24 * time.Hour, 12 * time.Hour, 1},
		{24 * time.Hour, 24 * time.Hour, 0},
	}
	for _, c := range cases {
		w := logic.Window{Size: c.size, Hop: c.hop}
		if err := w.Validate(); err != nil {
			t.Fatal(err)
		}
		got := UnitSpan(w)
		if got != c.want {
			t.Errorf("UnitSpan(%s hop %s) = %d, want %d", c.size, c.hop, got, c.want)
		}
		// UnitSpan must cover every day (it may not be tighter than the
		// brute force on any of them).
		for i := range 10 {
			day := time.Date(2024, 5, 1+i*37, 0, 0, 0, 0, time.UTC)
			if b := spanBrute(w, day); b > got {
				t.Errorf("UnitSpan(%s hop %s) = %d, but windows starting on %s reach %d days on", c.size, c.hop, got, day.Format(time.DateOnly), b)
			}
		}
	}
}

const planConfig = `
streams:
  orders:
    time: ts
    fields: {ts: time, amount: float}
views:
  tumbling:
    stream: orders
    window: 10s
    measures: {n: count()}
  hopping:
    stream: orders
    window: 20s
    hop: 5s
    measures: {n: count()}
`

func planCatalog(t *testing.T, yaml string) *config.Catalog {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// unitDates lists the plan's computed units as "date:key,key".
func unitDates(p Plan) []string {
	var out []string
	for _, u := range p.Compute {
		s := u.Date + ":"
		for i, k := range u.Keys() {
			if i > 0 {
				s += ","
			}
			s += k
		}
		out = append(out, s)
	}
	return out
}

func reusedDates(p Plan) []string {
	var out []string
	for _, r := range p.Reuse {
		out = append(out, r.Date)
	}
	return out
}

func TestPlanView(t *testing.T) {
	cat := planCatalog(t, planConfig)
	tum, hop := cat.Views["tumbling"], cat.Views["hopping"]
	const c0, c1 = 1000, 2000 // the previous run's cutoff, this run's
	files := []lake.FileInfo{
		{Key: "a1", Date: "2024-05-01", First: 1, Last: 10, MaxArrival: 500},
		{Key: "a2", Date: "2024-05-01", First: 11, Last: 20, MaxArrival: 900},
		{Key: "b1", Date: "2024-05-02", First: 21, Last: 30, MaxArrival: 999},
		{Key: "d1", Date: "2024-05-04", First: 31, Last: 40, MaxArrival: 800},
	}
	// No previous version: every date with rows is computed; a hopping
	// window starting the day before a file's date reads it too.
	p, err := PlanView(PlanInput{Run: "r", View: tum, Files: files, Cutoff: c1})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2024-05-01:a1,a2", "2024-05-02:b1", "2024-05-04:d1"}
	if got := unitDates(p); !reflect.DeepEqual(got, want) || len(p.Reuse) != 0 {
		t.Fatalf("tumbling, no previous: %v reuse %v, want %v", got, p.Reuse, want)
	}
	u := p.Compute[0]
	if u.Run != "r" || u.View != "tumbling" || u.Definition != tum.Definition() || u.Cutoff != c1 || u.Stream != "orders" || u.ID() != "r/tumbling/2024-05-01" {
		t.Fatalf("unit %+v", u)
	}
	p, _ = PlanView(PlanInput{Run: "r", View: hop, Files: files, Cutoff: c1})
	want = []string{"2024-04-30:a1,a2", "2024-05-01:a1,a2,b1", "2024-05-02:b1", "2024-05-03:d1", "2024-05-04:d1"}
	if got := unitDates(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("hopping, no previous: %v, want %v", got, want)
	}

	// A previous version with a part for every date, at cutoff c0; a late
	// event lands in 2024-05-02 (b2 arrived after c0).
	parts := func(v *logic.View, dates ...string) *batchviews.ViewVersion {
		vv := &batchviews.ViewVersion{Cutoff: c0, Definition: v.Definition()}
		for _, d := range dates {
			vv.Parts = append(vv.Parts, batchviews.Part{Date: d, Key: "p/" + d, Rows: 3, Run: "r0", Cutoff: c0})
		}
		return vv
	}
	late := append(append([]lake.FileInfo(nil), files...), lake.FileInfo{Key: "b2", Date: "2024-05-02", First: 41, Last: 41, MaxArrival: 1500})
	p, _ = PlanView(PlanInput{Run: "r", View: tum, Files: late, Cutoff: c1, Prev: parts(tum, "2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04")})
	if got, want := unitDates(p), []string{"2024-05-02:b1,b2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("tumbling, late event: computed %v, want %v", got, want)
	}
	// 2024-05-03 had a part but has no file now: it is gone.
	if got, want := reusedDates(p), []string{"2024-05-01", "2024-05-04"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("tumbling, late event: reused %v, want %v", got, want)
	}
	if p.Reuse[0] != (batchviews.Part{Date: "2024-05-01", Key: "p/2024-05-01", Rows: 3, Run: "r0", Cutoff: c0}) {
		t.Fatalf("reused part %+v", p.Reuse[0])
	}
	// Hopping: the day before the late event's date reads it too.
	p, _ = PlanView(PlanInput{Run: "r", View: hop, Files: late, Cutoff: c1, Prev: parts(hop, "2024-04-30", "2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04")})
	if got, want := unitDates(p), []string{"2024-05-01:a1,a2,b1,b2", "2024-05-02:b1,b2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("hopping, late event: computed %v, want %v", got, want)
	}
	if got, want := reusedDates(p), []string{"2024-04-30", "2024-05-03", "2024-05-04"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("hopping, late event: reused %v, want %v", got, want)
	}
	// A date new since the previous version is computed.
	p, _ = PlanView(PlanInput{Run: "r", View: tum, Files: files, Cutoff: c1, Prev: parts(tum, "2024-05-01")})
	if got, want := unitDates(p), []string{"2024-05-02:b1", "2024-05-04:d1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("new dates: computed %v, want %v", got, want)
	}
	// Parts of another definition are never reused.
	other := parts(tum, "2024-05-01", "2024-05-02", "2024-05-04")
	other.Definition = "something else"
	p, _ = PlanView(PlanInput{Run: "r", View: tum, Files: files, Cutoff: c1, Prev: other})
	if len(p.Compute) != 3 || len(p.Reuse) != 0 {
		t.Fatalf("another definition: %v reuse %v", unitDates(p), reusedDates(p))
	}
	// A run whose cutoff is below a part's: the part may hold rows the run
	// must leave to the speed layer, unless every row arrived before both.
	p, _ = PlanView(PlanInput{Run: "r", View: tum, Files: files, Cutoff: 950, Prev: parts(tum, "2024-05-01", "2024-05-02", "2024-05-04")})
	if got, want := unitDates(p), []string{"2024-05-02:b1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("lower cutoff: computed %v, want %v (b1 arrived at 999 >= 950)", got, want)
	}
	// A retention horizon drops earlier dates.
	p, _ = PlanView(PlanInput{Run: "r", View: hop, Files: files, Cutoff: c1, Horizon: "2024-05-02"})
	if got, want := unitDates(p), []string{"2024-05-02:b1", "2024-05-03:d1", "2024-05-04:d1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("horizon: %v, want %v", got, want)
	}
	// A bad date is an error, not a silent skip.
	if _, err := PlanView(PlanInput{Run: "r", View: tum, Files: []lake.FileInfo{{Key: "x", Date: "May 1"}}, Cutoff: c1}); err == nil {
		t.Fatal("bad date planned")
	}
}

// A worker whose catalog lacks the unit's view, or defines it otherwise,
// refuses the unit: a final error result, not an attempt to retry, and
// nothing read or written.
func TestComputerRefusesOtherDefinitions(t *testing.T) {
	cat := planCatalog(t, planConfig)
	c := NewComputer(ComputeConfig{}, nil, nil, cat) // a refusal reads no lake and writes no part
	defer c.Close()
	v := cat.Views["tumbling"]
	ok := Unit{Run: "r", View: v.Name, Definition: v.Definition(), Date: "2024-05-01", Stream: "orders"}
	for name, u := range map[string]Unit{
		"unknown view":     {Run: "r", View: "nope", Definition: "x", Date: "2024-05-01", Stream: "orders"},
		"other definition": func() Unit { u := ok; u.Definition = "other"; return u }(),
		"other stream":     func() Unit { u := ok; u.Stream = "clicks"; return u }(),
		"undecodable date": func() Unit { u := ok; u.Date = "May 1"; return u }(),
	} {
		res, err := c.Compute(context.Background(), u)
		if err != nil || res.Err == "" {
			t.Errorf("%s: result %+v, error %v; want a refusal", name, res, err)
		}
	}
}
