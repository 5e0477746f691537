package storagetest

import (
	"cmp"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
)

// ViewStore holds the batch layer's view versions and the records of its
// runs. Batch runs publish into it and record their runs; serving reads
// the current version's rows.
//
// Contract:
//   - Publish makes ver the current version at once: for every view in
//     rows it stores the rows and sets ver.Views[view].Rows (the entry
//     must hold the view's Cutoff, else the publish is refused and nothing
//     changes); other entries keep the rows of the versions they come from.
//     Readers see the previous version or the whole new one, never a part.
//   - Current returns the current version (nil before the first publish),
//     to any handle; Version returns a kept version by id (an unknown one:
//     an error matching batchviews.ErrMissingMeta); Versions lists the
//     kept versions' ids, oldest first, the current one last. At least the
//     two newest versions are kept.
//   - Rows returns a view's rows in a version with window start in
//     [fromMs, toMs), ordered by window then group; the rows are shared
//     (read only). A view absent from the version, or stored under another
//     definition (logic.View.Definition), is batchviews.ErrNoView. Cutoff
//     is the current version's cutoff of the view under its definition (0:
//     none); StreamCutoff the smallest cutoff of the stream's views with an
//     entry under any definition (0: none).
//   - KeepOnly hints that only ver's rows are worth keeping in memory.
//   - SaveRun writes or replaces a run record; Run reads one (found false
//     for an unknown or malformed id); Runs lists them, newest first.
//   - LockRuns takes the exclusive run lock without waiting
//     (batchviews.ErrLocked while another holder has it);
//     RecoverInterrupted, called under the lock, settles every run still
//     recorded as running: succeeded when its version is the current one
//     (it died after publishing), else failed with
//     batchviews.InterruptedError.
//   - WritePart stores the rows of a view whose window start falls on one
//     UTC date, computed by a run, from any handle; it refuses a row of
//     another date; no rows gives a Part without an object. A part is
//     visible once a published version refers to it.
//   - PublishParts makes a version whose entries hold parts (written by
//     any handles, or taken from earlier versions) current on top of the
//     version it was built on (nil: none), setting its Gen; when another
//     publish on the same base got there first it fails with an error
//     matching batchviews.ErrConflict and nothing of it is seen. Publish
//     builds on the current version. Parts the kept versions refer to stay
//     readable (a part reused from a version that is gone included), and so
//     do unpublished parts of a run recorded as running; unpublished parts
//     of a finished run are removed by a later publish.
//   - Current on another handle shows a publish at the latest PointerTTL
//     after it; on the publishing handle at once, and on a handle that
//     took the run lock after the publish at once too.
//   - Safe for concurrent use by any number of handles.
type ViewStore interface {
	WritePart(ctx context.Context, v *logic.View, date, run string, rows []batchviews.Row) (batchviews.Part, error)
	PublishParts(ctx context.Context, base, ver *batchviews.Version) error
	PointerTTL() time.Duration
	Publish(ver *batchviews.Version, rows map[string][]batchviews.Row) error
	Current() (*batchviews.Version, error)
	Version(id string) (*batchviews.Version, error)
	Versions() ([]string, error)
	Rows(ctx context.Context, ver *batchviews.Version, v *logic.View, fromMs, toMs int64) ([]batchviews.Row, error)
	Cutoff(v *logic.View) (int64, error)
	StreamCutoff(ctx context.Context, stream string, cat *config.Catalog) (int64, error)
	KeepOnly(ver *batchviews.Version)
	SaveRun(r batchviews.Run) error
	Run(id string) (batchviews.Run, bool, error)
	Runs() ([]batchviews.Run, error)
	LockRuns() (unlock func(), err error)
	RecoverInterrupted() (int, error)
}

// NewViewStore makes a fresh, empty batch view store and returns a
// function that opens it (each call: a new handle, like another process).
type NewViewStore func(t *testing.T) (open func() ViewStore)

// RunViewStore runs the batch view store suite.
func RunViewStore(t *testing.T, newStore NewViewStore) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, func() ViewStore)
	}{
		{"PublishCurrentRows", viewsPublish},
		{"Versions", viewsVersions},
		{"Definitions", viewsDefinitions},
		{"Runs", viewsRuns},
		{"InterruptedRuns", viewsInterrupted},
		{"PartsFromWorkers", viewsParts},
		{"PublishRace", viewsRace},
		{"ReusedPartsSurviveGC", viewsReuse},
		{"RunInProgressKeepsParts", viewsInProgress},
		{"PointerTTL", viewsTTL},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

// batchView is a view on "orders": count and min(amount) by country, one
// minute windows; measures vary its definition.
func batchView(t *testing.T, name string, measures ...logic.MeasureDef) *logic.View {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(measures) == 0 {
		measures = []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "lo", Expr: "min(amount)"}}
	}
	v, err := logic.NewView(name, logic.ViewDef{Stream: "orders", Window: time.Minute, GroupBy: []string{"country"}, Measures: measures}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// randomBatchRows makes n rows of v (two slots) in distinct (window,
// group) cells, in random order, an empty min now and then.
func randomBatchRows(v *logic.View, rng *rand.Rand, n int) []batchviews.Row {
	seen := map[[2]int64]bool{}
	var out []batchviews.Row
	for len(out) < n {
		w, g := int64(rng.IntN(30))*60000, int64(rng.IntN(8))
		if seen[[2]int64{w, g}] {
			continue
		}
		seen[[2]int64{w, g}] = true
		lo := math.Round((rng.Float64()-0.5)*1e6) / 100
		if rng.IntN(6) == 0 {
			lo = math.NaN()
		}
		key := v.GroupKey([]logic.Value{{Kind: logic.TypeString, S: string(rune('A' + g))}})
		out = append(out, batchviews.Row{Window: w, Group: key, State: logic.State{Num: []float64{float64(rng.IntN(1000) + 1), lo}}})
	}
	return out
}

// afterTTL waits until a publish by another handle shows in st's Current.
func afterTTL(st ViewStore) { time.Sleep(st.PointerTTL()) }

// cloneRows copies rows deeply (the store may sort or keep what it is given).
func cloneRows(rows []batchviews.Row) []batchviews.Row {
	out := make([]batchviews.Row, len(rows))
	for i, r := range rows {
		out[i] = batchviews.Row{Window: r.Window, Group: r.Group, State: logic.State{Num: slices.Clone(r.State.Num)}}
	}
	return out
}

// checkBatchRows compares what Rows returns for [from, to) with the rows
// given, filtered and ordered here.
func checkBatchRows(t *testing.T, st ViewStore, ver *batchviews.Version, v *logic.View, all []batchviews.Row, from, to int64) {
	t.Helper()
	var want []batchviews.Row
	for _, r := range all {
		if r.Window >= from && r.Window < to {
			want = append(want, r)
		}
	}
	slices.SortFunc(want, func(a, b batchviews.Row) int {
		return cmp.Or(cmp.Compare(a.Window, b.Window), cmp.Compare(a.Group, b.Group))
	})
	got, err := st.Rows(context.Background(), ver, v, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s [%d, %d): %d rows, want %d", v.Name, from, to, len(got), len(want))
	}
	same := func(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }
	for i := range want {
		g, w := got[i], want[i]
		if g.Window != w.Window || g.Group != w.Group || len(g.State.Num) != 2 || !same(g.State.Num[0], w.State.Num[0]) || !same(g.State.Num[1], w.State.Num[1]) {
			t.Fatalf("%s row %d: %+v, want %+v", v.Name, i, g, w)
		}
	}
}

func viewsPublish(t *testing.T, open func() ViewStore) {
	ctx := context.Background()
	st := open()
	if cur, err := st.Current(); err != nil || cur != nil {
		t.Fatalf("empty store: %v %v", cur, err)
	}
	a, b := batchView(t, "a"), batchView(t, "b")
	rng := rand.New(rand.NewPCG(1, 2))
	rowsA, rowsB := randomBatchRows(a, rng, 120), randomBatchRows(b, rng, 40)
	v1 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{
		"a": {Cutoff: 10_000, Definition: a.Definition()}, "b": {Cutoff: 20_000, Definition: b.Definition()}}}
	if err := st.Publish(v1, map[string][]batchviews.Row{"a": cloneRows(rowsA), "b": cloneRows(rowsB)}); err != nil {
		t.Fatal(err)
	}
	// Another handle (a serving process) sees it.
	rd := open()
	cur, err := rd.Current()
	if err != nil || cur == nil || cur.ID != v1.ID || cur.Views["a"].Rows != 120 || cur.Views["a"].Cutoff != 10_000 || cur.Views["b"].Rows != 40 || cur.Views["b"].Cutoff != 20_000 {
		t.Fatalf("current %+v %v", cur, err)
	}
	for _, r := range [][2]int64{{math.MinInt64, math.MaxInt64}, {60000, 180000}, {0, 1}, {600000, 1200001}, {1800000, 1900000}} {
		checkBatchRows(t, rd, cur, a, rowsA, r[0], r[1])
		checkBatchRows(t, rd, cur, b, rowsB, r[0], r[1])
	}
	if _, err := rd.Rows(ctx, cur, batchView(t, "zzz"), 0, 1); !errors.Is(err, batchviews.ErrNoView) {
		t.Fatalf("a view not in the version: %v, want ErrNoView", err)
	}
	for v, want := range map[*logic.View]int64{a: 10_000, b: 20_000, batchView(t, "zzz"): 0} {
		if got, err := rd.Cutoff(v); err != nil || got != want {
			t.Fatalf("cutoff of %s: %d %v, want %d", v.Name, got, err, want)
		}
	}

	// v2 refreshes only a; b keeps v1's rows and cutoff.
	rowsA2 := randomBatchRows(a, rng, 30)
	v2 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 30_000, Definition: a.Definition()}, "b": cur.Views["b"]}}
	if err := st.Publish(v2, map[string][]batchviews.Row{"a": cloneRows(rowsA2)}); err != nil {
		t.Fatal(err)
	}
	afterTTL(rd)
	cur2, err := rd.Current()
	if err != nil || cur2.ID != v2.ID || cur2.Views["a"].Rows != 30 || cur2.Views["a"].Cutoff != 30_000 || cur2.Views["b"].Cutoff != 20_000 || cur2.Views["b"].Rows != 40 {
		t.Fatalf("v2 %+v %v", cur2, err)
	}
	rd.KeepOnly(cur2)
	checkBatchRows(t, rd, cur2, a, rowsA2, math.MinInt64, math.MaxInt64)
	checkBatchRows(t, rd, cur2, b, rowsB, math.MinInt64, math.MaxInt64)
	// A version still kept reads as it was.
	checkBatchRows(t, rd, cur, a, rowsA, math.MinInt64, math.MaxInt64)
	// An empty view is published as such.
	v3 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 40_000, Definition: a.Definition()}}}
	if err := st.Publish(v3, map[string][]batchviews.Row{"a": nil}); err != nil {
		t.Fatal(err)
	}
	afterTTL(rd)
	cur3, _ := rd.Current()
	checkBatchRows(t, rd, cur3, a, nil, math.MinInt64, math.MaxInt64)
	if _, err := rd.Rows(ctx, cur3, b, 0, math.MaxInt64); !errors.Is(err, batchviews.ErrNoView) {
		t.Fatalf("b, left out of v3: %v, want ErrNoView", err)
	}
	// A view in rows must carry its cutoff: refused, nothing changes.
	if err := st.Publish(&batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{}}, map[string][]batchviews.Row{"a": cloneRows(rowsA)}); err == nil {
		t.Fatal("publish without a cutoff entry succeeded")
	}
	afterTTL(rd)
	if cur, _ := rd.Current(); cur.ID != v3.ID {
		t.Fatalf("current after a refused publish: %s, want %s", cur.ID, v3.ID)
	}
}

func viewsVersions(t *testing.T, open func() ViewStore) {
	st := open()
	a := batchView(t, "a")
	rng := rand.New(rand.NewPCG(3, 4))
	var ids []string
	for i := range 4 {
		ver := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: int64(i+1) * 10_000, Definition: a.Definition()}}}
		if err := st.Publish(ver, map[string][]batchviews.Row{"a": randomBatchRows(a, rng, 5)}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ver.ID)
		time.Sleep(2 * time.Millisecond) // ids are time-ordered
	}
	rd := open()
	got, err := rd.Versions()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 || len(got) > len(ids) || !slices.Equal(got, ids[len(ids)-len(got):]) {
		t.Fatalf("versions %v, want the newest of %v, oldest first", got, ids)
	}
	for i, id := range got {
		ver, err := rd.Version(id)
		if err != nil || ver.ID != id || ver.Views["a"].Cutoff != int64(len(ids)-len(got)+i+1)*10_000 {
			t.Fatalf("version %s: %+v %v", id, ver, err)
		}
	}
	if _, err := rd.Version(batchviews.NewID()); !errors.Is(err, batchviews.ErrMissingMeta) {
		t.Fatalf("an unknown version: %v, want ErrMissingMeta", err)
	}
}

// viewsDefinitions: rows are read only under the definition they were
// computed with; the stream's cutoff takes every definition.
func viewsDefinitions(t *testing.T, open func() ViewStore) {
	st := open()
	a := batchView(t, "a")
	aNew := batchView(t, "a", logic.MeasureDef{Name: "n", Expr: "count()"}, logic.MeasureDef{Name: "hi", Expr: "max(amount)"})
	b := batchView(t, "b")
	if a.Definition() == aNew.Definition() {
		t.Fatal("fixture: the definitions are the same")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	ver := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{
		"a": {Cutoff: 50_000, Definition: a.Definition()}, "b": {Cutoff: 70_000, Definition: b.Definition()}}}
	rowsA := randomBatchRows(a, rng, 10)
	if err := st.Publish(ver, map[string][]batchviews.Row{"a": cloneRows(rowsA), "b": randomBatchRows(b, rng, 10)}); err != nil {
		t.Fatal(err)
	}
	cur, err := st.Current()
	if err != nil {
		t.Fatal(err)
	}
	checkBatchRows(t, st, cur, a, rowsA, math.MinInt64, math.MaxInt64)
	if _, err := st.Rows(context.Background(), cur, aNew, math.MinInt64, math.MaxInt64); !errors.Is(err, batchviews.ErrNoView) {
		t.Fatalf("rows under another definition: %v, want ErrNoView", err)
	}
	if c, err := st.Cutoff(aNew); err != nil || c != 0 {
		t.Fatalf("cutoff under another definition: %d %v, want 0", c, err)
	}
	ctx := context.Background()
	aBatchTier, err := logic.NewView("a", logic.ViewDef{Stream: "orders", Window: time.Minute, GroupBy: []string{"country"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}}, Tier: "batch"}, a.Stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		views []*logic.View
		want  int64
	}{
		{[]*logic.View{aNew, b}, 50_000}, // a's entry counts under any definition
		{[]*logic.View{b}, 70_000},
		{[]*logic.View{batchView(t, "c")}, 0},
		{[]*logic.View{aBatchTier, b}, 70_000}, // a batch-tier view keeps no speed state: its cutoff does not count
	} {
		cat := &config.Catalog{Streams: map[string]*logic.Stream{"orders": a.Stream}, Views: map[string]*logic.View{}}
		for _, v := range c.views {
			cat.Views[v.Name] = v
			cat.ViewOrder = append(cat.ViewOrder, v.Name)
		}
		if got, err := st.StreamCutoff(ctx, "orders", cat); err != nil || got != c.want {
			t.Fatalf("stream cutoff over %v: %d %v, want %d", cat.ViewOrder, got, err, c.want)
		}
	}
}

func viewsRuns(t *testing.T, open func() ViewStore) {
	st := open()
	base := time.Now().UTC().Truncate(time.Millisecond)
	var ids []string
	for i := range 4 {
		id := batchviews.NewID()
		ids = append(ids, id)
		r := batchviews.Run{ID: id, Status: batchviews.StatusRunning, Views: []string{"a"}, Started: base.Add(time.Duration(i) * time.Second)}
		if err := st.SaveRun(r); err != nil {
			t.Fatal(err)
		}
		r.Status, r.RowsRead, r.Finished = batchviews.StatusSucceeded, int64(i), r.Started.Add(time.Millisecond)
		if i == 3 {
			r.Status, r.Error = batchviews.StatusFailed, "boom"
		}
		if err := st.SaveRun(r); err != nil {
			t.Fatal(err)
		}
	}
	rd := open()
	runs, err := rd.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 4 {
		t.Fatalf("%d runs, want 4", len(runs))
	}
	for i, r := range runs {
		k := 3 - i // newest first
		if r.ID != ids[k] || r.RowsRead != int64(k) || !r.Started.Equal(base.Add(time.Duration(k)*time.Second)) {
			t.Fatalf("run %d: %+v, want run %s", i, r, ids[k])
		}
	}
	if runs[0].Status != batchviews.StatusFailed || runs[0].Error != "boom" || runs[1].Status != batchviews.StatusSucceeded {
		t.Fatalf("statuses: %+v", runs[:2])
	}
	if r, ok, err := rd.Run(ids[2]); !ok || err != nil || r.Status != batchviews.StatusSucceeded || r.RowsRead != 2 {
		t.Fatalf("run %+v %v %v", r, ok, err)
	}
	for _, id := range []string{batchviews.NewID(), "../x", ""} {
		if _, ok, err := rd.Run(id); ok || err != nil {
			t.Fatalf("run %q: found %v, %v", id, ok, err)
		}
	}
}

// viewsInterrupted: the run lock admits one holder; a run left "running"
// by a process that died is settled by RecoverInterrupted: failed, or
// succeeded when it had published its version; finished runs are left
// alone.
func viewsInterrupted(t *testing.T, open func() ViewStore) {
	st := open()
	unlock, err := st.LockRuns()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open().LockRuns(); !errors.Is(err, batchviews.ErrLocked) {
		t.Fatalf("a second lock: %v, want ErrLocked", err)
	}
	unlock()
	unlock2, err := open().LockRuns()
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	defer unlock2()
	dead := batchviews.Run{ID: batchviews.NewID(), Status: batchviews.StatusRunning, Started: time.Now().UTC()}
	done := batchviews.Run{ID: batchviews.NewID(), Status: batchviews.StatusSucceeded, Started: time.Now().UTC()}
	for _, r := range []batchviews.Run{dead, done} {
		if err := st.SaveRun(r); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := st.RecoverInterrupted(); err != nil || n != 1 {
		t.Fatalf("recovered %d (%v), want 1", n, err)
	}
	if r, _, _ := st.Run(dead.ID); r.Status != batchviews.StatusFailed || r.Error != batchviews.InterruptedError || r.Finished.IsZero() {
		t.Fatalf("interrupted run: %+v", r)
	}
	if r, _, _ := st.Run(done.ID); r.Status != batchviews.StatusSucceeded || r.Error != "" {
		t.Fatalf("finished run changed: %+v", r)
	}
	if n, err := st.RecoverInterrupted(); err != nil || n != 0 {
		t.Fatalf("recovered %d (%v) again, want 0", n, err)
	}
	if cur, _ := st.Current(); cur != nil {
		t.Fatalf("an interrupted run made %s current", cur.ID)
	}

	// A run that died after publishing its version (current, its record
	// not yet saved) succeeded: recovery says so, from the version.
	published := batchviews.Run{ID: batchviews.NewID(), Status: batchviews.StatusRunning, Started: time.Now().UTC()}
	if err := st.SaveRun(published); err != nil {
		t.Fatal(err)
	}
	v := batchView(t, "a")
	rows := randomBatchRows(v, rand.New(rand.NewPCG(7, 8)), 3)
	ver := &batchviews.Version{ID: published.ID, Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 42, Definition: v.Definition()}}}
	if err := st.Publish(ver, map[string][]batchviews.Row{"a": rows}); err != nil {
		t.Fatal(err)
	}
	if n, err := open().RecoverInterrupted(); err != nil || n != 1 {
		t.Fatalf("recovered %d (%v), want 1", n, err)
	}
	r, _, _ := st.Run(published.ID)
	if r.Status != batchviews.StatusSucceeded || r.Version != published.ID || r.Error != "" || r.RowsOut != 3 || r.Cutoffs["a"] != 42 {
		t.Fatalf("run that published: %+v", r)
	}
}
