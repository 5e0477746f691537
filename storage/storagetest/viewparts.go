package storagetest

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
)

const dayMs = 24 * 60 * 60 * 1000

// partsDay0 is the first date (days since 1970-01-01) of the parts tests.
var partsDay0 = int(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC).UnixMilli() / dayMs)

func dateOf(day int) string {
	return time.UnixMilli(int64(day) * dayMs).UTC().Format(time.DateOnly)
}

// dayRows makes n rows of v in distinct (window, group) cells whose
// windows start on day (days since 1970-01-01), the day's first and last
// minutes among them, in random order.
func dayRows(v *logic.View, rng *rand.Rand, day, n int) []batchviews.Row {
	rows := randomBatchRows(v, rng, n) // windows in the first 30 minutes
	for i := range rows {
		m := rows[i].Window / 60000 // 0..29
		if m >= 15 {
			m += 1440 - 30 // the day's last quarter hour
		}
		rows[i].Window = int64(day)*dayMs + m*60000
	}
	return rows
}

func collectRows(days ...[]batchviews.Row) []batchviews.Row {
	var out []batchviews.Row
	for _, d := range days {
		out = append(out, d...)
	}
	return out
}

// checkRanges compares Rows with the rows given over ranges around and
// across the dates from day on, and random ones.
func checkRanges(t *testing.T, st ViewStore, ver *batchviews.Version, v *logic.View, all []batchviews.Row, day, days int, rng *rand.Rand) {
	t.Helper()
	start := func(d int) int64 { return int64(d) * dayMs }
	// First ranges growing to the left, more dates each time (each needs
	// rows a narrower one before it did not), then the rest.
	var ranges [][2]int64
	for d := day + days - 1; d >= day; d-- {
		ranges = append(ranges, [2]int64{start(d) + 1, start(day + days)})
	}
	ranges = append(ranges, [2]int64{math.MinInt64, math.MaxInt64}, [2]int64{start(day + days), math.MaxInt64}, [2]int64{math.MinInt64, start(day)})
	for d := day; d < day+days; d++ {
		ranges = append(ranges,
			[2]int64{start(d), start(d + 1)},                   // one date
			[2]int64{start(d) + 60000, start(d+1) - 60000},     // inside it
			[2]int64{start(d+1) - 600000, start(d+1) + 600000}, // across its end
			[2]int64{start(d) - 1, start(d+2) + 1})             // spanning dates
	}
	for range 20 {
		lo := start(day) - dayMs/2 + rng.Int64N(int64(days+1)*dayMs)
		ranges = append(ranges, [2]int64{lo, lo + rng.Int64N(2*dayMs)})
	}
	for _, r := range ranges {
		checkBatchRows(t, st, ver, v, all, r[0], r[1])
	}
}

// viewsParts: parts written by two handles (workers) and published by a
// third read back as the union of what was written, over any range.
func viewsParts(t *testing.T, open func() ViewStore) {
	ctx := context.Background()
	w1, w2, pub := open(), open(), open()
	a, b := batchView(t, "a"), batchView(t, "b")
	rng := rand.New(rand.NewPCG(11, 12))
	d0 := partsDay0
	run := batchviews.NewID()
	if err := pub.SaveRun(batchviews.Run{ID: run, Status: batchviews.StatusRunning, Started: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// a: four dates, the third without rows; w1 computes the first two,
	// w2 the others and b's one date.
	byDay := [][]batchviews.Row{dayRows(a, rng, d0, 50), dayRows(a, rng, d0+1, 70), nil, dayRows(a, rng, d0+3, 30)}
	var parts []batchviews.Part
	for i, rows := range byDay {
		w := w1
		if i >= 2 {
			w = w2
		}
		p, err := w.WritePart(ctx, a, dateOf(d0+i), run, cloneRows(rows))
		if err != nil {
			t.Fatal(err)
		}
		if p.Date != dateOf(d0+i) || p.Rows != len(rows) || p.Run != run || (p.Key == "") != (len(rows) == 0) {
			t.Fatalf("part %d: %+v for %d rows", i, p, len(rows))
		}
		parts = append(parts, p)
	}
	all := collectRows(byDay...)
	rowsB := dayRows(b, rng, d0+1, 20)
	pb, err := w2.WritePart(ctx, b, dateOf(d0+1), run, cloneRows(rowsB))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w1.WritePart(ctx, a, dateOf(d0), run, cloneRows(byDay[1][:1])); err == nil {
		t.Fatal("a row of another date written into a part")
	}
	base, err := pub.Current()
	if err != nil || base != nil {
		t.Fatalf("current before the first publish: %+v %v", base, err)
	}
	// b's part as a's: refused, nothing published.
	bad := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 5000, Definition: a.Definition(), Parts: []batchviews.Part{pb}}}}
	if err := pub.PublishParts(ctx, base, bad); err == nil {
		t.Fatal("a part of view b published as view a's")
	}
	rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	ver := &batchviews.Version{ID: run, Views: map[string]batchviews.ViewVersion{
		"a": {Cutoff: 5000, Definition: a.Definition(), Parts: parts},
		"b": {Cutoff: 6000, Definition: b.Definition(), Parts: []batchviews.Part{pb}}}}
	if err := pub.PublishParts(ctx, base, ver); err != nil {
		t.Fatal(err)
	}
	if ver.Gen != 1 {
		t.Fatalf("first version's generation %d, want 1", ver.Gen)
	}
	rd := open()
	cur, err := rd.Current()
	if err != nil || cur == nil || cur.ID != run || cur.Gen != 1 || cur.Views["a"].Rows != len(all) || cur.Views["b"].Rows != len(rowsB) || cur.Views["a"].Cutoff != 5000 {
		t.Fatalf("current %+v %v", cur, err)
	}
	got := cur.Views["a"].Parts
	if len(got) != 4 {
		t.Fatalf("parts %+v", got)
	}
	for i, p := range got {
		if p.Date != dateOf(d0+i) || p.Rows != len(byDay[i]) || p.Run != run || p.Cutoff != 5000 {
			t.Fatalf("part %d: %+v", i, p)
		}
	}
	checkRanges(t, rd, cur, a, all, d0, 4, rng)
	checkRanges(t, rd, cur, b, rowsB, d0, 4, rng)
	if _, err := open().Version(bad.ID); !errors.Is(err, batchviews.ErrMissingMeta) {
		t.Fatalf("the refused version: %v, want ErrMissingMeta", err)
	}
}

// viewsRace: two publishes on one base: exactly one wins, the other gets
// ErrConflict and is seen nowhere; a reader meanwhile sees the base or the
// winner, whole; the loser can build again on the winner.
func viewsRace(t *testing.T, open func() ViewStore) {
	ctx := context.Background()
	st := open()
	a := batchView(t, "a")
	rng := rand.New(rand.NewPCG(13, 14))
	d0 := partsDay0
	rows0 := dayRows(a, rng, d0, 40)
	v0 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 1000, Definition: a.Definition()}}}
	if err := st.Publish(v0, map[string][]batchviews.Row{"a": cloneRows(rows0)}); err != nil {
		t.Fatal(err)
	}
	type contender struct {
		h    ViewStore
		base *batchviews.Version
		ver  *batchviews.Version
		rows []batchviews.Row
		err  error
	}
	cs := make([]*contender, 2)
	want := map[string]int{v0.ID: len(rows0)} // rows of each version a reader may see
	for i := range cs {
		c := &contender{h: open()}
		var err error
		if c.base, err = c.h.Current(); err != nil || c.base == nil || c.base.ID != v0.ID {
			t.Fatalf("base %+v %v", c.base, err)
		}
		run := batchviews.NewID()
		c.rows = dayRows(a, rng, d0+1+i, 30+i)
		p, err := c.h.WritePart(ctx, a, dateOf(d0+1+i), run, cloneRows(c.rows))
		if err != nil {
			t.Fatal(err)
		}
		c.ver = &batchviews.Version{ID: run, Views: map[string]batchviews.ViewVersion{"a": {Cutoff: int64(2000 + i), Definition: a.Definition(), Parts: []batchviews.Part{p}}}}
		want[run] = len(c.rows)
		cs[i] = c
	}
	rd := open()
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			cur, err := rd.Current()
			if err != nil {
				done <- err
				return
			}
			rows, err := rd.Rows(ctx, cur, a, math.MinInt64, math.MaxInt64)
			if n, ok := want[cur.ID]; err != nil || !ok || len(rows) != n {
				done <- errors.Join(err, errors.New("a reader saw version "+cur.ID+" with other rows than it has"))
				return
			}
		}
	}()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c.err = c.h.PublishParts(ctx, c.base, c.ver)
		}()
	}
	close(start)
	wg.Wait()
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var win, lose *contender
	for _, c := range cs {
		switch {
		case c.err == nil && win == nil:
			win = c
		case errors.Is(c.err, batchviews.ErrConflict) && lose == nil:
			lose = c
		default:
			t.Fatalf("publish results %v and %v: want one success and one ErrConflict", cs[0].err, cs[1].err)
		}
	}
	afterTTL(rd)
	cur, err := rd.Current()
	if err != nil || cur.ID != win.ver.ID || cur.Gen != v0.Gen+1 {
		t.Fatalf("current %+v %v, want the winner %s", cur, err, win.ver.ID)
	}
	checkBatchRows(t, rd, cur, a, win.rows, math.MinInt64, math.MaxInt64)
	if _, err := open().Version(lose.ver.ID); !errors.Is(err, batchviews.ErrMissingMeta) {
		t.Fatalf("the loser's version: %v, want ErrMissingMeta", err)
	}
	if ids, err := rd.Versions(); err != nil || slices.Contains(ids, lose.ver.ID) || !slices.Contains(ids, win.ver.ID) {
		t.Fatalf("versions %v %v", ids, err)
	}
	// The loser builds again on the winner, with its part.
	afterTTL(lose.h)
	base, err := lose.h.Current()
	if err != nil || base.ID != win.ver.ID {
		t.Fatalf("the loser's new base %+v %v", base, err)
	}
	again := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 3000, Definition: a.Definition(), Parts: lose.ver.Views["a"].Parts}}}
	if err := lose.h.PublishParts(ctx, base, again); err != nil || again.Gen != base.Gen+1 {
		t.Fatalf("publish on the new base: %v, generation %d after %d", err, again.Gen, base.Gen)
	}
	afterTTL(rd)
	if cur, err = rd.Current(); err != nil || cur.ID != again.ID {
		t.Fatalf("current %+v %v, want %s", cur, err, again.ID)
	}
	checkBatchRows(t, rd, cur, a, lose.rows, math.MinInt64, math.MaxInt64)
	// A stale base conflicts.
	if err := st.PublishParts(ctx, v0, &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{}}); !errors.Is(err, batchviews.ErrConflict) {
		t.Fatalf("publish on a stale base: %v, want ErrConflict", err)
	}
}

// readsNothing checks that a part is gone: a version referring to it
// cannot be read.
func readsNothing(t *testing.T, open func() ViewStore, v *logic.View, p batchviews.Part) {
	t.Helper()
	ctx := context.Background()
	st := open()
	base, err := st.Current()
	if err != nil {
		t.Fatal(err)
	}
	probe := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{v.Name: {Cutoff: 9999, Definition: v.Definition(), Parts: []batchviews.Part{p}}}}
	if err := st.PublishParts(ctx, base, probe); err != nil {
		t.Fatal(err)
	}
	fresh := open()
	cur, err := fresh.Current()
	if err != nil || cur.ID != probe.ID {
		t.Fatalf("probe %+v %v", cur, err)
	}
	if rows, err := fresh.Rows(ctx, cur, v, math.MinInt64, math.MaxInt64); err == nil {
		t.Fatalf("part %s of run %s, which no version refers to and whose run is over, still reads (%d rows)", p.Date, p.Run, len(rows))
	}
}

// viewsReuse: versions that reuse parts of an earlier run keep them after
// that run's version is gone; the parts no kept version refers to go.
func viewsReuse(t *testing.T, open func() ViewStore) {
	ctx := context.Background()
	st := open()
	a := batchView(t, "a")
	rng := rand.New(rand.NewPCG(15, 16))
	d0 := partsDay0
	run1 := batchviews.NewID()
	if err := st.SaveRun(batchviews.Run{ID: run1, Status: batchviews.StatusRunning, Started: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	old := [][]batchviews.Row{dayRows(a, rng, d0, 25), dayRows(a, rng, d0+1, 26), dayRows(a, rng, d0+2, 27)}
	var parts []batchviews.Part
	for i, rows := range old {
		p, err := st.WritePart(ctx, a, dateOf(d0+i), run1, cloneRows(rows))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	if err := st.PublishParts(ctx, nil, &batchviews.Version{ID: run1, Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 1000, Definition: a.Definition(), Parts: parts}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveRun(batchviews.Run{ID: run1, Status: batchviews.StatusSucceeded, Version: run1, Started: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// Later runs recompute only the last date and reuse the others, until
	// run 1's version is gone.
	var last []batchviews.Row
	for k := 0; ; k++ {
		ids, err := st.Versions()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(ids, run1) {
			break
		}
		if k == 20 {
			t.Fatalf("after %d publishes every version is kept: %v", k, ids)
		}
		base, err := st.Current()
		if err != nil {
			t.Fatal(err)
		}
		run := batchviews.NewID()
		if err := st.SaveRun(batchviews.Run{ID: run, Status: batchviews.StatusRunning, Started: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		last = dayRows(a, rng, d0+2, 10+k)
		p, err := st.WritePart(ctx, a, dateOf(d0+2), run, cloneRows(last))
		if err != nil {
			t.Fatal(err)
		}
		prev := base.Views["a"].Parts
		ver := &batchviews.Version{ID: run, Views: map[string]batchviews.ViewVersion{"a": {Cutoff: int64(2000 + k), Definition: a.Definition(), Parts: []batchviews.Part{prev[0], prev[1], p}}}}
		if err := st.PublishParts(ctx, base, ver); err != nil {
			t.Fatal(err)
		}
		if err := st.SaveRun(batchviews.Run{ID: run, Status: batchviews.StatusSucceeded, Version: run, Started: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	rd := open()
	cur, err := rd.Current()
	if err != nil {
		t.Fatal(err)
	}
	if ps := cur.Views["a"].Parts; len(ps) != 3 || ps[0].Run != run1 || ps[1].Run != run1 || ps[0].Cutoff != 1000 || ps[2].Run == run1 {
		t.Fatalf("parts of the current version %+v: want run 1's first two", ps)
	}
	checkRanges(t, rd, cur, a, collectRows(old[0], old[1], last), d0, 3, rng)
	// Run 1's part of the last date is no kept version's: gone.
	readsNothing(t, open, a, parts[2])
}

// viewsInProgress: publishes by another handle keep the unpublished parts
// of a run recorded as running, and remove those of a finished run.
func viewsInProgress(t *testing.T, open func() ViewStore) {
	ctx := context.Background()
	w := open()
	a, b := batchView(t, "a"), batchView(t, "b")
	rng := rand.New(rand.NewPCG(17, 18))
	d0 := partsDay0
	runA, runF := batchviews.NewID(), batchviews.NewID()
	for _, run := range []string{runA, runF} {
		if err := w.SaveRun(batchviews.Run{ID: run, Status: batchviews.StatusRunning, Started: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	rowsA := [][]batchviews.Row{dayRows(a, rng, d0, 20), dayRows(a, rng, d0+1, 21)}
	var partsA []batchviews.Part
	for i, rows := range rowsA {
		p, err := w.WritePart(ctx, a, dateOf(d0+i), runA, cloneRows(rows))
		if err != nil {
			t.Fatal(err)
		}
		partsA = append(partsA, p)
	}
	pf, err := w.WritePart(ctx, a, dateOf(d0), runF, cloneRows(rowsA[0]))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SaveRun(batchviews.Run{ID: runF, Status: batchviews.StatusFailed, Error: "boom", Started: time.Now().UTC(), Finished: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	other := open()
	for k := range 5 {
		ver := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"b": {Cutoff: int64(k + 1), Definition: b.Definition()}}}
		if err := other.Publish(ver, map[string][]batchviews.Row{"b": dayRows(b, rng, d0, 5)}); err != nil {
			t.Fatal(err)
		}
	}
	pub := open()
	base, err := pub.Current()
	if err != nil {
		t.Fatal(err)
	}
	ver := &batchviews.Version{ID: runA, Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 100, Definition: a.Definition(), Parts: partsA}, "b": base.Views["b"]}}
	if err := pub.PublishParts(ctx, base, ver); err != nil {
		t.Fatal(err)
	}
	rd := open()
	cur, err := rd.Current()
	if err != nil || cur.ID != runA {
		t.Fatalf("current %+v %v", cur, err)
	}
	checkRanges(t, rd, cur, a, collectRows(rowsA...), d0, 2, rng)
	readsNothing(t, open, a, pf)
}

// viewsTTL: a handle's Current shows another handle's publish within the
// pointer TTL, its own at once, and every one once it holds the run lock.
func viewsTTL(t *testing.T, open func() ViewStore) {
	st, rd := open(), open()
	a := batchView(t, "a")
	rng := rand.New(rand.NewPCG(19, 20))
	if cur, err := rd.Current(); err != nil || cur != nil {
		t.Fatalf("empty store: %+v %v", cur, err)
	}
	var prev *batchviews.Version
	for i := range 3 {
		ver := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: int64(i + 1), Definition: a.Definition()}}}
		if err := st.Publish(ver, map[string][]batchviews.Row{"a": randomBatchRows(a, rng, 3)}); err != nil {
			t.Fatal(err)
		}
		if cur, err := st.Current(); err != nil || cur.ID != ver.ID {
			t.Fatalf("the publisher's current %+v %v, want %s", cur, err, ver.ID)
		}
		afterTTL(rd)
		cur, err := rd.Current()
		if err != nil || cur.ID != ver.ID || prev != nil && cur.Gen != prev.Gen+1 {
			t.Fatalf("another handle's current after the TTL: %+v %v, want %s", cur, err, ver.ID)
		}
		prev = cur
	}
	// Taking the run lock shows every publish made before, at once.
	ver := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 9, Definition: a.Definition()}}}
	if err := st.Publish(ver, map[string][]batchviews.Row{"a": randomBatchRows(a, rng, 3)}); err != nil {
		t.Fatal(err)
	}
	unlock, err := rd.LockRuns()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if cur, err := rd.Current(); err != nil || cur.ID != ver.ID {
		t.Fatalf("current under the run lock: %+v %v, want %s", cur, err, ver.ID)
	}
}
