package query

import (
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/batchviews"
)

// TestViewState: a view answers only when its speed cells have joined
// their stream's commits and batch rows of its own definition reach back
// to where the cells start; batch rows of another definition are never
// used; the progress of a rebuild is between 0 and 1.
func TestViewState(t *testing.T) {
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "amount": logic.TypeFloat}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView("v", logic.ViewDef{Stream: "orders", Window: time.Minute, Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	key, def := v.StateKey(), v.Definition()
	ver := func(d string, cutoff int64) *batchviews.Version {
		return &batchviews.Version{ID: "x", Views: map[string]batchviews.ViewVersion{"v": {Cutoff: cutoff, Definition: d}}}
	}
	joinedPart := func(seq uint64, from int64) PartSpeed {
		return PartSpeed{Found: true, Seq: seq, Views: map[string]ViewSpeed{key: {JoinedOK: true, Joined: seq, From: from}}}
	}
	joined := func(seq uint64, from int64) StreamSpeed { return SpeedOf([]PartSpeed{joinedPart(seq, from)}) }
	one := func(p PartSpeed) StreamSpeed { return SpeedOf([]PartSpeed{p}) }
	rebuilding := PartSpeed{Found: true, Seq: 40, Views: map[string]ViewSpeed{key: {Rebuilding: true, Rebuilt: 10, RebuildFirst: 1, From: 5000}}}
	for _, c := range []struct {
		name         string
		ver          *batchviews.Version
		pos          StreamSpeed
		speed, batch bool
		ready        bool
		batchRows    bool    // a ready view answers from the version's rows
		progress     float64 // when not ready
	}{
		{name: "joined, own rows reach the cells", ver: ver(def, 5000), pos: joined(10, 5000), speed: true, batch: true, ready: true, batchRows: true},
		{name: "joined, own rows past the cells' start", ver: ver(def, 9000), pos: joined(10, 5000), speed: true, batch: true, ready: true, batchRows: true},
		{name: "own rows behind the cells' start", ver: ver(def, 4000), pos: joined(10, 5000), speed: true, batch: true, progress: 0.5},
		{name: "rows of another definition, cells from a cutoff", ver: ver("0123456789abcdef", 9000), pos: joined(10, 5000), speed: true, batch: true, progress: 0.5},
		{name: "rows of another definition, cells from the log's start", ver: ver("0123456789abcdef", 9000), pos: joined(10, 0), speed: true, batch: true, ready: true},
		{name: "rows written before definitions", ver: ver("", 9000), pos: joined(10, 0), speed: true, batch: true, ready: true},
		{name: "no version, cells from the log's start", pos: joined(10, 0), speed: true, batch: true, ready: true},
		{name: "no position yet", ver: ver(def, 5000), speed: true, batch: true, progress: 0.5},
		{name: "position without the view", ver: ver(def, 5000), pos: one(PartSpeed{Found: true, Seq: 10}), speed: true, batch: true, progress: 0.5},
		{name: "joined but out of step", ver: ver(def, 5000), pos: one(PartSpeed{Found: true, Seq: 12, Views: map[string]ViewSpeed{key: {JoinedOK: true, Joined: 10}}}), speed: true, batch: true, progress: 0.5},
		{name: "rebuilding a quarter, batch done", ver: ver(def, 5000), pos: one(rebuilding), speed: true, batch: true, progress: 0.63},
		{name: "rebuilding, batch of the old definition", ver: ver("0123456789abcdef", 5000),
			pos: one(PartSpeed{Found: true, Seq: 40, Views: map[string]ViewSpeed{key: {Rebuilding: true, Rebuilt: 40, RebuildFirst: 1, From: 5000}}}), speed: true, batch: true, progress: 0.5},

		// Partitions: the view is whole when it is in every one.
		{name: "partitions all joined", ver: ver(def, 5000), pos: SpeedOf([]PartSpeed{joinedPart(10, 5000), joinedPart(3, 0), joinedPart(0, 5000)}),
			speed: true, batch: true, ready: true, batchRows: true},
		{name: "a partition not joined", ver: ver(def, 5000),
			pos:   SpeedOf([]PartSpeed{joinedPart(10, 5000), {Found: true, Seq: 12, Views: map[string]ViewSpeed{key: {JoinedOK: true, Joined: 10}}}}),
			speed: true, batch: true, progress: 0.75},
		{name: "a partition without a position", ver: ver(def, 5000), pos: SpeedOf([]PartSpeed{joinedPart(10, 5000), {}}), speed: true, batch: true, progress: 0.75},
		{name: "own rows behind one partition's cells", ver: ver(def, 6000), pos: SpeedOf([]PartSpeed{joinedPart(10, 5000), joinedPart(10, 7000)}),
			speed: true, batch: true, progress: 0.5},
		{name: "one partition rebuilding a quarter, the other joined", ver: ver(def, 5000), pos: SpeedOf([]PartSpeed{rebuilding, joinedPart(4, 5000)}),
			speed: true, batch: true, progress: 0.81}, // speed (0.25+1)/2, batch 1
		{name: "a partition refolding toward its target", ver: ver(def, 5000),
			pos:   SpeedOf([]PartSpeed{joinedPart(10, 5000), {Found: true, Seq: 2, Target: 8, Views: map[string]ViewSpeed{key: {JoinedOK: true, Joined: 2, From: 5000}}}}),
			speed: true, batch: true, progress: 0.81}, // speed (1+0.25)/2, batch 1
		{name: "batch only, own rows", ver: ver(def, 5000), batch: true, ready: true, batchRows: true},
		{name: "batch only, no version", batch: true, ready: true},
		{name: "batch only, rows of another definition", ver: ver("0123456789abcdef", 5000), batch: true, progress: 0},
	} {
		st := StateOf(v, c.ver, c.pos, c.speed, c.batch)
		if st.Ready != c.ready || (c.ready && (st.Batch != nil) != c.batchRows) {
			t.Errorf("%s: %+v, want ready %v, batch rows %v", c.name, st, c.ready, c.batchRows)
			continue
		}
		if st.Batch != nil && st.Batch.Definition != def {
			t.Errorf("%s: answers from rows of definition %q", c.name, st.Batch.Definition)
		}
		switch {
		case c.ready && st.Progress != 1:
			t.Errorf("%s: ready with progress %v", c.name, st.Progress)
		case !c.ready && (st.Progress != c.progress || st.Progress >= 1):
			t.Errorf("%s: progress %v, want %v", c.name, st.Progress, c.progress)
		}
	}
}

// A position the speed layer created fresh (Redis lost its data, a first
// start over a log, a replay) has every view joined at once, but its cells
// miss the events up to its target: the views are rebuilding until the
// position reaches it, then ready.
func TestFreshPositionIsWholeAtItsTarget(t *testing.T) {
	v := testView(t, testStream(t), "by_country", time.Minute, 0)
	ver := &batchviews.Version{Views: map[string]batchviews.ViewVersion{v.Name: {Cutoff: 5000, Definition: v.Definition()}}}
	part := func(seq, target uint64) PartSpeed {
		return PartSpeed{Found: true, Seq: seq, Target: target,
			Views: map[string]ViewSpeed{v.StateKey(): {JoinedOK: true, Joined: seq, From: 5000}}}
	}
	// Partition 1 has reached its target; partition 0 decides.
	pos := func(seq, target uint64) StreamSpeed { return SpeedOf([]PartSpeed{part(seq, target), part(9, 9)}) }
	for _, tc := range []struct {
		seq, target uint64
		ready       bool
	}{
		{0, 0, true}, // a fresh position over nothing to refold
		{0, 8, false},
		{3, 8, false},
		{8, 8, true},
		{12, 8, true},
	} {
		st := StateOf(v, ver, pos(tc.seq, tc.target), true, true)
		if st.Ready != tc.ready || (st.Ready && st.Progress != 1) || (!st.Ready && (st.Progress < 0 || st.Progress >= 1)) {
			t.Errorf("seq %d, target %d: ready %v, progress %v; want ready %v", tc.seq, tc.target, st.Ready, st.Progress, tc.ready)
		}
	}
}

// TestSpeedOf: a stream's position is found when every partition's is,
// its Seq adds the partitions' up, its watermark is the smallest event
// time of the partitions that took records lately (a partition quiet for
// defaults.PartitionIdle while others take records holds nothing back),
// and Seqs tells apart positions whose sums are equal.
func TestSpeedOf(t *testing.T) {
	idle := defaults.PartitionIdle.Milliseconds()
	const now = int64(1_764_000_000_000)
	parts := []PartSpeed{
		{Found: true, Seq: 10, Watermark: now - 5_000, LastArrival: now},
		{Found: true, Seq: 4, Watermark: now - 9_000, LastArrival: now - idle/2},  // slowest that counts
		{Found: true, Seq: 7, Watermark: now - 60_000, LastArrival: now - 2*idle}, // idle: holds nothing back
		{Found: true, Seq: 0}, // no data yet
	}
	got := SpeedOf(parts)
	if !got.Found || got.Seq != 21 || got.Watermark != now-9_000 || got.Seqs() != "10.4.7.0" {
		t.Fatalf("SpeedOf: found %v, seq %d, watermark %d (want %d), seqs %q", got.Found, got.Seq, got.Watermark, now-9_000, got.Seqs())
	}
	// Every partition with data idle: the smallest of them counts.
	quiet := SpeedOf([]PartSpeed{{Found: true, Seq: 1, Watermark: now - 3_000, LastArrival: now - 3*idle}, {Found: true, Seq: 1, Watermark: now - 8_000, LastArrival: now - 3*idle}})
	if quiet.Watermark != now-8_000 {
		t.Fatalf("all quiet: watermark %d, want %d", quiet.Watermark, now-8_000)
	}
	// A partition without a position: not found, and its sequence is no number.
	missing := SpeedOf([]PartSpeed{parts[0], {}})
	if missing.Found || missing.Seq != 10 || missing.Seqs() != "10.-" || missing.Watermark != now-5_000 {
		t.Fatalf("a partition missing: %+v, seqs %q", missing, missing.Seqs())
	}
	if SpeedOf(nil).Found {
		t.Fatal("no partitions: found")
	}
	// Equal sums, other positions.
	a := SpeedOf([]PartSpeed{{Found: true, Seq: 12}, {Found: true, Seq: 3}})
	b := SpeedOf([]PartSpeed{{Found: true, Seq: 11}, {Found: true, Seq: 4}})
	c := SpeedOf([]PartSpeed{{Found: true, Seq: 1}, {Found: true, Seq: 23}})
	d := SpeedOf([]PartSpeed{{Found: true, Seq: 12}, {Found: true, Seq: 3}})
	if a.Seq != b.Seq || a.Seqs() == b.Seqs() || a.Seqs() == c.Seqs() || a.Seqs() != d.Seqs() {
		t.Fatalf("seqs: %q %q %q %q", a.Seqs(), b.Seqs(), c.Seqs(), d.Seqs())
	}
}
