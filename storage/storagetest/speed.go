package storagetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
)

// SpeedStore is the speed layer's state: per view (state key,
// logic.View.StateKey), per arrival epoch, window and group, the view's
// slots, committed together with the stream's position. It is what the
// speed layer writes and reads back, what serving reads, and what batch
// expires and audits.
//
// Contract:
//   - Commit applies the deltas of every view of ONE stream and moves the
//     stream's position from prevSeq to next.Seq in one atomic step: cells
//     and position change together or not at all, and readers never see
//     half a commit. It is a compare-and-set on the position: when the
//     stored sequence is not prevSeq (an absent position counts as 0)
//     nothing at all is written and the error matches
//     speedstore.ErrConflict — so a redelivered micro-batch is refused, of
//     two writers committing from one position at most one succeeds, and a
//     writer whose store lost its data (prevSeq > 0, no position) is
//     refused. Cells merge with logic's slot rules (logic.View.MergeState).
//   - Positions per view: on a fresh position (none stored) every view of
//     the commit joins, its cells covering arrival epochs from freshFrom
//     on (ViewPosition.From), and the position keeps next.Target. From
//     then on a view moves with the stream (ViewPosition.Joined == Seq)
//     when it has joined; a view that has not (new to the stream) is left
//     alone by the stream's commits until a rebuild joins it.
//   - BeginRebuild / CommitRebuild rebuild a view beside the stream's
//     commits: fenced by the rebuild's last record (ErrConflict), never
//     past the stream's position, joining the view in the commit that
//     reaches it (joined = true). BeginRebuild on a stream without a
//     position is ErrNoPosition, on a joined view ErrJoined; on a rebuild
//     under way it resumes it.
//   - Position returns the last committed position (found false: none),
//     never a partial one.
//   - Partitions: a stream's partitions (logic.Stream.Partitions) have a
//     position, cells and a lease each; every method taking p acts on
//     partition p alone, and writers of different partitions never fence
//     each other.
//   - Read / ReadEach return the cells of a view with window start in
//     [fromMs, toMs) and epoch >= minEpoch, each (epoch, window, group)
//     once, in any order, merged over the stream's partitions with
//     logic's rules (slots as logic.View.MergeState, distinct sketches
//     united, quantile buckets added, picks of last and first measures by
//     their keys, logic.MergePick); a group whose slots are all empty
//     is still a cell. An error from ReadEach's fn stops the read and
//     comes back as is.
//   - Expire drops a state key's cells of epochs < beforeEpoch in every
//     partition and leaves the others untouched; idempotent.
//   - Reset drops a partition's position and the cells of the given keys;
//     DropState drops one key's cells and its part of the position;
//     StateKeys lists the keys that have cells; DropLegacy deletes a
//     stream's state as kept before streams had partitions, leaving the
//     partitions' alone (idempotent).
//   - Every method is safe for concurrent use by many goroutines and
//     processes. Any error other than those named means the store could
//     not be asked or written; the caller retries from Position.
type SpeedStore interface {
	Commit(ctx context.Context, stream string, p int, prevSeq uint64, next speedstore.Position, freshFrom int64, deltas []*logic.Delta, ents ...*logic.EntityDelta) error
	Position(ctx context.Context, stream string, p int) (speedstore.Position, bool, error)
	Read(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]speedstore.Cell, error)
	ReadEach(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64, fn func(speedstore.Cell) error) error
	Expire(ctx context.Context, s *logic.Stream, key string, beforeEpoch int64) error
	Reset(ctx context.Context, stream string, p int, keys []string) error
	BeginRebuild(ctx context.Context, stream string, p int, key string, from int64) (speedstore.Rebuild, error)
	CommitRebuild(ctx context.Context, stream string, p int, prev, first, next uint64, d *logic.Delta) (joined bool, err error)
	StateKeys(ctx context.Context) ([]string, error)
	DropState(ctx context.Context, stream string, p int, key string) error
	DropLegacy(ctx context.Context, stream string, keys []string) error
}

// NewSpeedStore makes a fresh, empty speed store and returns a function
// that opens a handle on it (each call: a new handle with its own
// connection, like another process).
type NewSpeedStore func(t *testing.T) (open func() SpeedStore)

// RunSpeedStore runs the speed store suite.
func RunSpeedStore(t *testing.T, newStore NewSpeedStore) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, func() SpeedStore)
	}{
		{"CommitFencedByPosition", speedCommitFenced},
		{"ConcurrentWritersCountOnce", speedConcurrentWriters},
		{"ReadRanges", speedReadRanges},
		{"ReadEachStops", speedReadEachStops},
		{"EmptyStateCellIsKept", speedEmptyStateCell},
		{"Expire", speedExpire},
		{"Reset", speedReset},
		{"FreshPositionJoinsViews", speedFreshPosition},
		{"RebuildJoinsTheStreamsCommits", speedRebuild},
		{"PartitionsMerge", speedPartitions},
		{"PicksMerge", speedPicks},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

// SpeedView is the view the speed suite commits: count, sums, min/max of
// a float and an int, avg, by country, one-minute windows, on stream
// "orders".
func SpeedView(t testing.TB) *logic.View {
	t.Helper()
	return speedViewNamed(t, "by_country", []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "rev", Expr: "sum(amount)"}, {Name: "items", Expr: "sum(items)"},
		{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(amount)"}, {Name: "avg", Expr: "avg(amount)"},
		{Name: "ilo", Expr: "min(items)"}, {Name: "ihi", Expr: "max(items)"}})
}

// SpeedViewPartitioned is SpeedView's measures, a distinct count
// ("kinds", of items) and a quantile ("p50", of amount) on stream "orders"
// of the given partitions.
func SpeedViewPartitioned(t testing.TB, partitions int) *logic.View {
	t.Helper()
	return speedViewOn(t, "by_country_sk", partitions, []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "rev", Expr: "sum(amount)"}, {Name: "items", Expr: "sum(items)"},
		{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(amount)"}, {Name: "avg", Expr: "avg(amount)"},
		{Name: "ilo", Expr: "min(items)"}, {Name: "ihi", Expr: "max(items)"},
		{Name: "kinds", Expr: "count_distinct(items)"}, {Name: "p50", Expr: "quantile(amount, 0.5)"}})
}

func speedViewNamed(t testing.TB, name string, ms []logic.MeasureDef) *logic.View {
	t.Helper()
	return speedViewOn(t, name, 1, ms)
}

func speedViewOn(t testing.TB, name string, partitions int, ms []logic.MeasureDef) *logic.View {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Partitions: partitions, Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView(name, logic.ViewDef{Stream: "orders", Window: 60e9, GroupBy: []string{"country"}, Measures: ms}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// SpeedEvent is one event of the speed suite: its arrival epoch, event
// time and fields (nulls: amount and items absent).
type SpeedEvent struct {
	Epoch   int64
	Time    int64
	Country string
	Amount  float64
	Items   int64
	Nulls   bool
}

// RandomSpeedEvents returns n events over five epochs (0, 10000, ...,
// 40000), ten one-minute windows and three countries.
func RandomSpeedEvents(rng *rand.Rand, n int) []SpeedEvent {
	out := make([]SpeedEvent, n)
	for i := range out {
		out[i] = SpeedEvent{Epoch: int64(rng.IntN(5)) * 10000, Time: int64(rng.IntN(10 * 60000)), Country: []string{"DE", "FR", "US"}[rng.IntN(3)],
			Amount: (rng.Float64() - 0.3) * math.Pow(10, float64(rng.IntN(12)-4)), Items: int64(rng.IntN(2000)) - 1000, Nulls: rng.IntN(10) == 0}
	}
	return out
}

// FoldSpeed folds events into a delta of v (a view on SpeedView's stream).
func FoldSpeed(v *logic.View, evs []SpeedEvent) *logic.Delta {
	d := v.NewDelta()
	for _, e := range evs {
		vals := make([]logic.Value, len(v.Stream.Fields))
		vals[v.Stream.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: e.Time}
		vals[v.Stream.FieldIndex("country")] = logic.Value{Kind: logic.TypeString, S: e.Country}
		if !e.Nulls {
			vals[v.Stream.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: e.Amount}
			vals[v.Stream.FieldIndex("items")] = logic.Value{Kind: logic.TypeInt, I: e.Items}
		}
		x := logic.Event{Time: e.Time, Values: vals}
		d.Fold(e.Epoch, &x)
	}
	return d
}

// SpeedCellWant is one expected cell of SpeedView, computed from the events
// directly (not through logic's merge).
type SpeedCellWant struct {
	n, items, cnt, ilo, ihi int64
	sum, lo, hi             float64
}

// ExpectedSpeedCells computes SpeedView's cells of the events with epoch >=
// minEpoch and window start in [from, to), by (epoch, window) and group.
func ExpectedSpeedCells(evs []SpeedEvent, minEpoch, from, to int64) map[[2]int64]map[string]*SpeedCellWant {
	out := map[[2]int64]map[string]*SpeedCellWant{}
	for _, e := range evs {
		w := e.Time / 60000 * 60000
		if e.Epoch < minEpoch || w < from || w >= to {
			continue
		}
		k := [2]int64{e.Epoch, w}
		if out[k] == nil {
			out[k] = map[string]*SpeedCellWant{}
		}
		g := "s" + e.Country // logic's group key of one string value
		x := out[k][g]
		if x == nil {
			x = &SpeedCellWant{lo: math.Inf(1), hi: math.Inf(-1), ilo: math.MaxInt64, ihi: math.MinInt64}
			out[k][g] = x
		}
		x.n++
		if !e.Nulls {
			x.cnt++
			x.sum += e.Amount
			x.items += e.Items
			x.lo = math.Min(x.lo, e.Amount)
			x.hi = math.Max(x.hi, e.Amount)
			x.ilo, x.ihi = min(x.ilo, e.Items), max(x.ihi, e.Items)
		}
	}
	return out
}

const allTime = 1 << 40

// CheckSpeedCells compares cells of a view with SpeedView's measures (by
// name, in any order) with the expected ones.
func CheckSpeedCells(t *testing.T, v *logic.View, cells []speedstore.Cell, want map[[2]int64]map[string]*SpeedCellWant) {
	t.Helper()
	n := 0
	for _, w := range want {
		n += len(w)
	}
	if len(cells) != n {
		t.Fatalf("%d cells, want %d", len(cells), n)
	}
	seen := map[string]bool{}
	for _, c := range cells {
		id := fmt.Sprintf("%d/%d/%q", c.Epoch, c.Window, c.Group)
		if seen[id] {
			t.Fatalf("cell %s read twice", id)
		}
		seen[id] = true
		x := want[[2]int64{c.Epoch, c.Window}][c.Group]
		if x == nil {
			t.Fatalf("unexpected cell %s", id)
		}
		vals := v.Finalize(&c.State)
		got := map[string]any{}
		for i, m := range v.Measures {
			got[m.Name] = vals[i]
		}
		if x.cnt == 0 {
			for _, m := range []string{"rev", "items", "lo", "hi", "avg", "ilo", "ihi"} {
				if got[m] != nil {
					t.Fatalf("cell %s = %v, want only n=%d", id, got, x.n)
				}
			}
			if got["n"] != x.n {
				t.Fatalf("cell %s = %v, want n=%d", id, got, x.n)
			}
			continue
		}
		// Sums are added in another order (per commit, then merged by the
		// store): allow rounding; min/max and integers must be exact.
		tol := 1e-9 * math.Max(1, math.Abs(x.sum))
		sumOK := math.Abs(got["rev"].(float64)-x.sum) <= tol
		avgOK := math.Abs(got["avg"].(float64)-x.sum/float64(x.cnt)) <= tol
		if got["n"] != x.n || !sumOK || !avgOK || got["items"] != x.items || got["lo"] != x.lo || got["hi"] != x.hi || got["ilo"] != x.ilo || got["ihi"] != x.ihi {
			t.Fatalf("cell %s = %v, want %+v", id, got, x)
		}
	}
}

func readAll(t *testing.T, st SpeedStore, v *logic.View, from, to, minEpoch int64) []speedstore.Cell {
	t.Helper()
	cells, err := st.Read(context.Background(), v, from, to, minEpoch)
	if err != nil {
		t.Fatal(err)
	}
	return cells
}

func speedCommitFenced(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	v := SpeedView(t)
	rng := rand.New(rand.NewPCG(1, 2))
	a, b := RandomSpeedEvents(rng, 3000), RandomSpeedEvents(rng, 2000)

	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 3000, Watermark: 42, LastArrival: 1234, Owner: "x"}, 0, []*logic.Delta{FoldSpeed(v, a)}); err != nil {
		t.Fatal(err)
	}
	// A redelivery of the same batch expects position 0: refused.
	err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 3000}, 0, []*logic.Delta{FoldSpeed(v, a)})
	if !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("redelivery: %v, want ErrConflict", err)
	}
	// A commit from a position the store never had: refused too.
	err = st.Commit(ctx, "orders", 0, 2999, speedstore.Position{Seq: 4000, Watermark: 99}, 0, []*logic.Delta{FoldSpeed(v, b)})
	if !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("stale commit: %v, want ErrConflict", err)
	}
	// ... and they changed nothing: neither the position nor a single cell.
	if pos, found, err := st.Position(ctx, "orders", 0); err != nil || !found || pos.Seq != 3000 || pos.Watermark != 42 || pos.LastArrival != 1234 || pos.Owner != "x" {
		t.Fatalf("position after refused commits: %+v %v %v", pos, found, err)
	}
	CheckSpeedCells(t, v, readAll(t, st, v, 0, allTime, 0), ExpectedSpeedCells(a, 0, 0, allTime))
	if err := st.Commit(ctx, "orders", 0, 3000, speedstore.Position{Seq: 5000, Watermark: 43, LastArrival: 5678, Owner: "y"}, 0, []*logic.Delta{FoldSpeed(v, b)}); err != nil {
		t.Fatal(err)
	}
	// Another handle (another process) sees the position and the merge of
	// both commits, equal to the fold of all events.
	st2 := open()
	pos, found, err := st2.Position(ctx, "orders", 0)
	if err != nil || !found || pos.Seq != 5000 || pos.Watermark != 43 || pos.LastArrival != 5678 || pos.Owner != "y" {
		t.Fatalf("position %+v %v %v", pos, found, err)
	}
	CheckSpeedCells(t, v, readAll(t, st2, v, 0, allTime, 0), ExpectedSpeedCells(slices.Concat(a, b), 0, 0, allTime))
	// Empty deltas just move the position.
	if err := st.Commit(ctx, "orders", 0, 5000, speedstore.Position{Seq: 5001, Watermark: 44}, 0, []*logic.Delta{v.NewDelta()}); err != nil {
		t.Fatal(err)
	}
	if pos, _, _ := st.Position(ctx, "orders", 0); pos.Seq != 5001 || pos.Watermark != 44 {
		t.Fatalf("position after an empty commit: %+v", pos)
	}
	CheckSpeedCells(t, v, readAll(t, st, v, 0, allTime, 0), ExpectedSpeedCells(slices.Concat(a, b), 0, 0, allTime))
	// Streams are fenced apart: another stream has no position, and a
	// writer that believes it has one (its store lost it) is refused.
	if _, found, err := st.Position(ctx, "other", 0); err != nil || found {
		t.Fatalf("other stream: found %v, %v", found, err)
	}
	if err := st.Commit(ctx, "other", 0, 5000, speedstore.Position{Seq: 6000}, 0, nil); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("commit on a lost position: %v, want ErrConflict", err)
	}
}

// Two writers race on one stream, each folding "the next chunk after the
// stored position" and committing from that position: the compare-and-set
// lets exactly one commit per position through, so every event is counted
// exactly once whatever the interleaving.
func speedConcurrentWriters(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	v := SpeedView(t)
	evs := RandomSpeedEvents(rand.New(rand.NewPCG(3, 4)), 4000)
	const chunk = 100
	var wg sync.WaitGroup
	var conflicts [2]int
	errs := make(chan error, 2)
	for w := 0; w < 2; w++ {
		st := open() // own connection, like another process
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				pos, _, err := st.Position(ctx, "orders", 0)
				if err != nil {
					errs <- err
					return
				}
				if pos.Seq >= uint64(len(evs)) {
					return
				}
				next := min(pos.Seq+chunk, uint64(len(evs)))
				err = st.Commit(ctx, "orders", 0, pos.Seq, speedstore.Position{Seq: next, Owner: fmt.Sprint(w)}, 0, []*logic.Delta{FoldSpeed(v, evs[pos.Seq:next])})
				if errors.Is(err, speedstore.ErrConflict) {
					conflicts[w]++
					continue
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	CheckSpeedCells(t, v, readAll(t, open(), v, 0, allTime, 0), ExpectedSpeedCells(evs, 0, 0, allTime))
	t.Logf("conflicts per writer: %v", conflicts)
}

func speedReadRanges(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	v := SpeedView(t)
	evs := RandomSpeedEvents(rand.New(rand.NewPCG(5, 6)), 3000)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{FoldSpeed(v, evs)}); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][3]int64{
		{0, allTime, 0}, {0, allTime, 20000}, {0, allTime, 40000}, {0, allTime, 40001},
		{120000, 180000, 0}, {119999, 180001, 10000}, {60000, 60000, 0}, {300000, 600000, 30000}, {-allTime, 0, 0},
	} {
		CheckSpeedCells(t, v, readAll(t, st, v, r[0], r[1], r[2]), ExpectedSpeedCells(evs, r[2], r[0], r[1]))
	}
	// Another view of the stream has its own cells.
	other := speedViewNamed(t, "other", []logic.MeasureDef{{Name: "n", Expr: "count()"}})
	if cells := readAll(t, st, other, 0, allTime, 0); len(cells) != 0 {
		t.Fatalf("%d cells of a view never committed", len(cells))
	}
}

func speedReadEachStops(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	v := SpeedView(t)
	evs := RandomSpeedEvents(rand.New(rand.NewPCG(7, 8)), 2000)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{FoldSpeed(v, evs)}); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("enough")
	calls := 0
	err := st.ReadEach(ctx, v, 0, allTime, 0, func(speedstore.Cell) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("ReadEach stopped with %v after %d calls, want %v after 3", err, calls, stop)
	}
	// Kept cells are whole once ReadEach returns nil.
	var kept []speedstore.Cell
	if err := st.ReadEach(ctx, v, 0, allTime, 0, func(c speedstore.Cell) error { kept = append(kept, c); return nil }); err != nil {
		t.Fatal(err)
	}
	CheckSpeedCells(t, v, kept, ExpectedSpeedCells(evs, 0, 0, allTime))
}

// A group whose every slot stays empty (min over null values only) is still
// a cell, as it is a row of the batch layer's GROUP BY.
func speedEmptyStateCell(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	v := speedViewNamed(t, "lo_only", []logic.MeasureDef{{Name: "lo", Expr: "min(amount)"}, {Name: "rev", Expr: "sum(amount)"}})
	d := FoldSpeed(v, []SpeedEvent{{Time: 1000, Country: "DE", Nulls: true}, {Time: 2000, Country: "FR", Amount: -2.5}})
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 2}, 0, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]any{}
	for _, c := range readAll(t, st, v, 0, allTime, 0) {
		got[c.Group] = v.Finalize(&c.State)
	}
	if len(got) != 2 || got["sDE"] == nil || got["sDE"][0] != nil || got["sDE"][1] != nil || got["sFR"][0] != -2.5 || got["sFR"][1] != -2.5 {
		t.Fatalf("cells %v", got)
	}
}

func speedExpire(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	v := SpeedView(t)
	other := speedViewNamed(t, "other", []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "rev", Expr: "sum(amount)"}, {Name: "items", Expr: "sum(items)"},
		{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(amount)"}, {Name: "avg", Expr: "avg(amount)"},
		{Name: "ilo", Expr: "min(items)"}, {Name: "ihi", Expr: "max(items)"}})
	evs := RandomSpeedEvents(rand.New(rand.NewPCG(9, 10)), 3000)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{FoldSpeed(v, evs), FoldSpeed(other, evs)}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := st.Expire(ctx, v.Stream, v.StateKey(), 30000); err != nil {
			t.Fatal(err)
		}
		CheckSpeedCells(t, v, readAll(t, st, v, 0, allTime, 0), ExpectedSpeedCells(evs, 30000, 0, allTime))
	}
	// Only that key's cells went.
	CheckSpeedCells(t, other, readAll(t, st, other, 0, allTime, 0), ExpectedSpeedCells(evs, 0, 0, allTime))
	// Commits go on into the epochs left, merging with what is there.
	more := RandomSpeedEvents(rand.New(rand.NewPCG(11, 12)), 500)
	for i := range more {
		more[i].Epoch = 30000 + more[i].Epoch%20000
	}
	if err := st.Commit(ctx, "orders", 0, 1, speedstore.Position{Seq: 2}, 0, []*logic.Delta{FoldSpeed(v, more), FoldSpeed(other, more)}); err != nil {
		t.Fatal(err)
	}
	CheckSpeedCells(t, v, readAll(t, st, v, 0, allTime, 0), ExpectedSpeedCells(slices.Concat(evs, more), 30000, 0, allTime))
	if err := st.Expire(ctx, v.Stream, v.StateKey(), math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if cells := readAll(t, st, v, 0, allTime, 0); len(cells) != 0 {
		t.Fatalf("%d cells after expiring every epoch", len(cells))
	}
}

func speedReset(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	v := SpeedView(t)
	evs := RandomSpeedEvents(rand.New(rand.NewPCG(13, 14)), 1000)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 10}, 0, []*logic.Delta{FoldSpeed(v, evs)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Reset(ctx, "orders", 0, []string{v.StateKey()}); err != nil {
		t.Fatal(err)
	}
	if _, found, err := st.Position(ctx, "orders", 0); err != nil || found {
		t.Fatalf("position after reset: found %v, %v", found, err)
	}
	if cells := readAll(t, st, v, 0, allTime, 0); len(cells) != 0 {
		t.Fatalf("%d cells survived reset", len(cells))
	}
	// The writer still on the old state is refused; a fresh start works.
	if err := st.Commit(ctx, "orders", 0, 10, speedstore.Position{Seq: 20}, 0, []*logic.Delta{FoldSpeed(v, evs)}); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("commit after reset: %v, want ErrConflict", err)
	}
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 20}, 0, []*logic.Delta{FoldSpeed(v, evs[:100])}); err != nil {
		t.Fatal(err)
	}
	CheckSpeedCells(t, v, readAll(t, st, v, 0, allTime, 0), ExpectedSpeedCells(evs[:100], 0, 0, allTime))
}

func speedFreshPosition(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	a := SpeedView(t)
	b := speedViewNamed(t, "count_only", []logic.MeasureDef{{Name: "n", Expr: "count()"}})
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 7, Watermark: 5, Target: 77}, 20000, []*logic.Delta{a.NewDelta(), b.NewDelta()}); err != nil {
		t.Fatal(err)
	}
	pos, found, err := st.Position(ctx, "orders", 0)
	if err != nil || !found || pos.Seq != 7 || pos.Target != 77 {
		t.Fatalf("fresh position %+v %v %v", pos, found, err)
	}
	for _, v := range []*logic.View{a, b} {
		if vp := pos.Views[v.StateKey()]; !vp.JoinedOK || vp.Joined != 7 || vp.From != 20000 || vp.Rebuilding {
			t.Fatalf("%s after the fresh commit: %+v", v.Name, vp)
		}
	}
	if err := st.Commit(ctx, "orders", 0, 7, speedstore.Position{Seq: 9}, 0, []*logic.Delta{a.NewDelta(), b.NewDelta()}); err != nil {
		t.Fatal(err)
	}
	pos, _, _ = st.Position(ctx, "orders", 0)
	for _, v := range []*logic.View{a, b} {
		if vp := pos.Views[v.StateKey()]; !vp.JoinedOK || vp.Joined != 9 || vp.From != 20000 {
			t.Fatalf("%s after the second commit: %+v", v.Name, vp)
		}
	}
	if len(pos.Views) != 2 {
		t.Fatalf("views in the position: %v", pos.Views)
	}
}

// speedRebuild: a view new to a stream with a position is skipped by the
// stream's commits until its rebuild, folding the records up to the
// stream's position in commits of its own (racing the stream's), joins;
// from then on the stream's commits carry it. Its cells then hold every
// event exactly once, like a view folded from the start, and the fences
// refuse what would count twice.
func speedRebuild(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	st := open()
	a := SpeedView(t)
	b := speedViewNamed(t, "by_country_2", []logic.MeasureDef{ // a's, in another order (CheckSpeedCells reads them by name)
		{Name: "ihi", Expr: "max(items)"}, {Name: "ilo", Expr: "min(items)"}, {Name: "avg", Expr: "avg(amount)"},
		{Name: "hi", Expr: "max(amount)"}, {Name: "lo", Expr: "min(amount)"}, {Name: "items", Expr: "sum(items)"},
		{Name: "rev", Expr: "sum(amount)"}, {Name: "n", Expr: "count()"}})
	rng := rand.New(rand.NewPCG(3, 4))
	// Records 1..60, 50 events each; record r's events in recs[r-1].
	recs := make([][]SpeedEvent, 60)
	for i := range recs {
		recs[i] = RandomSpeedEvents(rng, 50)
	}
	events := func(from, to int) []SpeedEvent { // records from..to, inclusive
		return slices.Concat(recs[from-1 : to]...)
	}
	if _, err := st.BeginRebuild(ctx, "orders", 0, b.StateKey(), 0); !errors.Is(err, speedstore.ErrNoPosition) {
		t.Fatalf("rebuild without a position: %v, want ErrNoPosition", err)
	}
	// The stream starts with view a only (a fresh position: a joins).
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 10}, 0, []*logic.Delta{FoldSpeed(a, events(1, 10))}); err != nil {
		t.Fatal(err)
	}
	// From now on the stream's commits carry b too, which has not joined.
	if err := st.Commit(ctx, "orders", 0, 10, speedstore.Position{Seq: 20}, 0, []*logic.Delta{FoldSpeed(a, events(11, 20)), FoldSpeed(b, events(11, 20))}); err != nil {
		t.Fatal(err)
	}
	if cells := readAll(t, st, b, 0, allTime, 0); len(cells) != 0 {
		t.Fatalf("a view that has not joined got %d cells from the stream's commit", len(cells))
	}
	rb, err := st.BeginRebuild(ctx, "orders", 0, b.StateKey(), 0)
	if err != nil || rb != (speedstore.Rebuild{}) {
		t.Fatalf("begin: %+v %v", rb, err)
	}
	if joined, err := st.CommitRebuild(ctx, "orders", 0, 0, 1, 12, FoldSpeed(b, events(1, 12))); err != nil || joined {
		t.Fatalf("rebuild 1..12: joined %v, %v", joined, err)
	}
	// Resuming finds where it stands; a stale rebuild commit is refused.
	if rb, err := st.BeginRebuild(ctx, "orders", 0, b.StateKey(), 99); err != nil || rb.Rebuilt != 12 || rb.From != 0 {
		t.Fatalf("resume: %+v %v", rb, err)
	}
	if _, err := st.CommitRebuild(ctx, "orders", 0, 0, 1, 12, FoldSpeed(b, events(1, 12))); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("a repeated rebuild commit: %v, want ErrConflict", err)
	}
	if _, err := st.CommitRebuild(ctx, "orders", 0, 12, 1, 21, FoldSpeed(b, events(13, 21))); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("a rebuild past the stream's position: %v, want ErrConflict", err)
	}
	// The stream moves on meanwhile, still without b.
	if err := st.Commit(ctx, "orders", 0, 20, speedstore.Position{Seq: 30}, 0, []*logic.Delta{FoldSpeed(a, events(21, 30)), FoldSpeed(b, events(21, 30))}); err != nil {
		t.Fatal(err)
	}
	if joined, err := st.CommitRebuild(ctx, "orders", 0, 12, 1, 20, FoldSpeed(b, events(13, 20))); err != nil || joined {
		t.Fatalf("rebuild 13..20: joined %v, %v (the stream is at 30)", joined, err)
	}
	pos, _, err := st.Position(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	if vp := pos.Views[b.StateKey()]; !vp.Rebuilding || vp.JoinedOK || vp.Rebuilt != 20 || vp.RebuildFirst != 1 {
		t.Fatalf("b while rebuilding: %+v", vp)
	}
	if vp := pos.Views[a.StateKey()]; !vp.JoinedOK || vp.Joined != 30 || vp.Rebuilding {
		t.Fatalf("a: %+v", vp)
	}
	if joined, err := st.CommitRebuild(ctx, "orders", 0, 20, 1, 30, FoldSpeed(b, events(21, 30))); err != nil || !joined {
		t.Fatalf("rebuild 21..30: joined %v, %v (want joined)", joined, err)
	}
	if _, err := st.BeginRebuild(ctx, "orders", 0, b.StateKey(), 0); !errors.Is(err, speedstore.ErrJoined) {
		t.Fatalf("begin after the join: %v, want ErrJoined", err)
	}
	// Joined: the stream's commits carry b.
	for _, r := range [][2]int{{31, 45}, {46, 60}} {
		if err := st.Commit(ctx, "orders", 0, uint64(r[0]-1), speedstore.Position{Seq: uint64(r[1])}, 0, []*logic.Delta{FoldSpeed(a, events(r[0], r[1])), FoldSpeed(b, events(r[0], r[1]))}); err != nil {
			t.Fatal(err)
		}
	}
	pos, _, _ = st.Position(ctx, "orders", 0)
	if vp := pos.Views[b.StateKey()]; !vp.JoinedOK || vp.Joined != 60 || vp.Rebuilding || vp.From != 0 {
		t.Fatalf("b after joining: %+v", vp)
	}
	for _, v := range []*logic.View{a, b} {
		CheckSpeedCells(t, v, readAll(t, st, v, 0, allTime, 0), ExpectedSpeedCells(events(1, 60), 0, 0, allTime))
	}
	// Clean-up: the keys are listed, and a dropped one is gone, cells and position.
	keys, err := st.StateKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{a.StateKey(), b.StateKey()}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("state keys %v, want %v", keys, want)
	}
	if err := st.DropState(ctx, "orders", 0, b.StateKey()); err != nil {
		t.Fatal(err)
	}
	if cells := readAll(t, st, b, 0, allTime, 0); len(cells) != 0 {
		t.Fatalf("%d cells after drop", len(cells))
	}
	pos, _, _ = st.Position(ctx, "orders", 0)
	if _, ok := pos.Views[b.StateKey()]; ok || pos.Seq != 60 {
		t.Fatalf("position after drop: %+v", pos)
	}
	CheckSpeedCells(t, a, readAll(t, st, a, 0, allTime, 0), ExpectedSpeedCells(events(1, 60), 0, 0, allTime))
}

// speedPartitions: four writers, one per partition of a stream, each on a
// handle of its own, commit their partition's events in chunks, all at
// once. The partitions' positions stay apart, and a read merges the
// partitions' cells into one per (epoch, window, group): its slots equal
// the direct computation over every event, its sketches those logic
// folds from every event in one delta (a distinct sketch's registers are
// the same whichever way the elements are split; bucket counts add).
// Expire, Reset and DropLegacy keep to what they name.
func speedPartitions(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	const parts, chunk = 4, 150
	v := SpeedViewPartitioned(t, parts)
	rng := rand.New(rand.NewPCG(21, 22))
	evs := make([][]SpeedEvent, parts)
	for p := range evs {
		evs[p] = RandomSpeedEvents(rng, 1000+200*p)
	}
	all := slices.Concat(evs...)
	var wg sync.WaitGroup
	errs := make(chan error, parts)
	for p := range parts {
		st := open()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < len(evs[p]); seq += chunk {
				next := min(seq+chunk, len(evs[p]))
				pos := speedstore.Position{Seq: uint64(next), Watermark: int64(p), LastArrival: int64(1000*p + next), Owner: fmt.Sprint(p)}
				if err := st.Commit(ctx, "orders", p, uint64(seq), pos, 0, []*logic.Delta{FoldSpeed(v, evs[p][seq:next])}); err != nil {
					errs <- fmt.Errorf("partition %d at %d: %w", p, seq, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := open()
	for p := range parts {
		pos, found, err := st.Position(ctx, "orders", p)
		n := len(evs[p])
		if err != nil || !found || pos.Seq != uint64(n) || pos.Watermark != int64(p) || pos.LastArrival != int64(1000*p+n) || pos.Owner != fmt.Sprint(p) {
			t.Fatalf("partition %d: position %+v %v %v", p, pos, found, err)
		}
	}
	checkSketches := func(cells []speedstore.Cell, evs []SpeedEvent) {
		t.Helper()
		want := FoldSpeed(v, evs)
		for _, c := range cells {
			dc := want.Cells[logic.CellKey{Epoch: c.Epoch, Window: c.Window, Group: c.Group}]
			if dc == nil {
				t.Fatalf("cell %d/%d/%q not in the fold", c.Epoch, c.Window, c.Group)
			}
			w := dc.State(v)
			if (w.HLL[0] == nil) != (c.State.HLL[0] == nil) || w.HLL[0] != nil && !w.HLL[0].Equal(c.State.HLL[0]) {
				t.Fatalf("cell %d/%d/%q: distinct sketch differs from the fold's", c.Epoch, c.Window, c.Group)
			}
			if len(w.Q[0]) != len(c.State.Q[0]) {
				t.Fatalf("cell %d/%d/%q: %d quantile buckets, the fold has %d", c.Epoch, c.Window, c.Group, len(c.State.Q[0]), len(w.Q[0]))
			}
			for b, n := range w.Q[0] {
				if c.State.Q[0][b] != n {
					t.Fatalf("cell %d/%d/%q: bucket %d = %v, the fold has %v", c.Epoch, c.Window, c.Group, b, c.State.Q[0][b], n)
				}
			}
		}
	}
	cells := readAll(t, st, v, 0, allTime, 0)
	CheckSpeedCells(t, v, cells, ExpectedSpeedCells(all, 0, 0, allTime))
	checkSketches(cells, all)
	cells = readAll(t, st, v, 120000, 420000, 20000)
	CheckSpeedCells(t, v, cells, ExpectedSpeedCells(all, 20000, 120000, 420000))
	// A single view's key is listed once, whatever its partitions.
	if keys, err := st.StateKeys(ctx); err != nil || !slices.Equal(keys, []string{v.StateKey()}) {
		t.Fatalf("state keys %v %v, want [%s]", keys, err, v.StateKey())
	}
	// Expire goes through every partition.
	if err := st.Expire(ctx, v.Stream, v.StateKey(), 30000); err != nil {
		t.Fatal(err)
	}
	CheckSpeedCells(t, v, readAll(t, st, v, 0, allTime, 0), ExpectedSpeedCells(all, 30000, 0, allTime))
	// Reset and the lease take one partition; DropLegacy none.
	if err := st.Reset(ctx, "orders", 2, []string{v.StateKey()}); err != nil {
		t.Fatal(err)
	}
	if err := st.DropLegacy(ctx, "orders", []string{v.StateKey()}); err != nil {
		t.Fatal(err)
	}
	rest := slices.Concat(evs[0], evs[1], evs[3])
	cells = readAll(t, st, v, 0, allTime, 0)
	CheckSpeedCells(t, v, cells, ExpectedSpeedCells(rest, 30000, 0, allTime))
	checkSketches(cells, rest)
	if _, found, err := st.Position(ctx, "orders", 2); err != nil || found {
		t.Fatalf("partition 2 after its reset: found %v, %v", found, err)
	}
	if pos, found, err := st.Position(ctx, "orders", 3); err != nil || !found || pos.Seq != uint64(len(evs[3])) {
		t.Fatalf("partition 3 after partition 2's reset: %+v %v %v", pos, found, err)
	}
}

// pickEvent is one event of speedPicks: its partition, log position,
// event time and fields (nil: absent).
type pickEvent struct {
	pos     logic.LogPos
	time    int64
	country string
	amount  any // float64 or nil
	items   any // int64 or nil
}

// speedPicks: last and first of a string, a float, an int and the time
// field, over three partitions committed concurrently in chunks of events
// whose times go back and forth (so a commit brings picks both later and
// earlier than the stored ones) and tie often (the log position decides),
// read back as the value of the latest (earliest) event with a value of
// each (epoch, window, group) — found here by sorting the events.
func speedPicks(t *testing.T, open func() SpeedStore) {
	ctx := context.Background()
	const parts, chunk = 3, 40
	v := speedViewOn(t, "picks", parts, []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "last_amount", Expr: "last(amount)"}, {Name: "first_amount", Expr: "first(amount)"},
		{Name: "last_items", Expr: "last(items)"}, {Name: "first_items", Expr: "first(items)"},
		{Name: "last_country", Expr: "last(country)"}, {Name: "first_ts", Expr: "first(ts)"}, {Name: "last_ts", Expr: "last(ts)"}})
	rng := rand.New(rand.NewPCG(31, 32))
	evs := make([][]pickEvent, parts)
	for p := range evs {
		seq := uint64(0)
		for range 600 + 100*p {
			if seq == 0 || rng.IntN(3) == 0 {
				seq++ // a new record: events of one record share its sequence and arrival
			}
			e := pickEvent{pos: logic.LogPos{Arrival: int64(seq/50) * 5000, Part: p, Seq: seq, Index: rng.IntN(4)},
				time: int64(rng.IntN(30)) * 10000, country: []string{"DE", "FR"}[rng.IntN(2)]}
			if rng.IntN(4) > 0 {
				e.amount = float64(rng.IntN(1000)) / 8
			}
			if rng.IntN(4) > 0 {
				e.items = int64(rng.IntN(50))
			}
			evs[p] = append(evs[p], e)
		}
	}
	epochOf := func(e pickEvent) int64 { return e.pos.Arrival / 20000 * 20000 }
	var wg sync.WaitGroup
	errs := make(chan error, parts)
	for p := range parts {
		st := open()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < len(evs[p]); seq += chunk {
				next := min(seq+chunk, len(evs[p]))
				d := v.NewDelta()
				for _, e := range evs[p][seq:next] {
					vals := make([]logic.Value, len(v.Stream.Fields))
					vals[v.Stream.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: e.time}
					vals[v.Stream.FieldIndex("country")] = logic.Value{Kind: logic.TypeString, S: e.country}
					if e.amount != nil {
						vals[v.Stream.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: e.amount.(float64)}
					}
					if e.items != nil {
						vals[v.Stream.FieldIndex("items")] = logic.Value{Kind: logic.TypeInt, I: e.items.(int64)}
					}
					d.FoldAt(epochOf(e), e.pos, &logic.Event{Time: e.time, Values: vals})
				}
				if err := st.Commit(ctx, "orders", p, uint64(seq), speedstore.Position{Seq: uint64(next)}, 0, []*logic.Delta{d}); err != nil {
					errs <- fmt.Errorf("partition %d at %d: %w", p, seq, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The expected cells: by (epoch, window, group), the events sorted by
	// (time, arrival, partition, sequence, index).
	type cellID struct {
		e, w int64
		g    string
	}
	byCell := map[cellID][]pickEvent{}
	for _, e := range slices.Concat(evs...) {
		k := cellID{epochOf(e), e.time / 60000 * 60000, "s" + e.country}
		byCell[k] = append(byCell[k], e)
	}
	before := func(a, b pickEvent) int {
		if c := cmpInt(a.time, b.time); c != 0 {
			return c
		}
		if c := cmpInt(a.pos.Arrival, b.pos.Arrival); c != 0 {
			return c
		}
		if c := cmpInt(int64(a.pos.Part), int64(b.pos.Part)); c != 0 {
			return c
		}
		if c := cmpInt(int64(a.pos.Seq), int64(b.pos.Seq)); c != 0 {
			return c
		}
		return cmpInt(int64(a.pos.Index), int64(b.pos.Index))
	}
	pick := func(es []pickEvent, has func(pickEvent) any, last bool) any {
		var best *pickEvent
		for i := range es {
			e := &es[i]
			if has(*e) == nil {
				continue
			}
			if best == nil || last && before(*best, *e) < 0 || !last && before(*e, *best) < 0 {
				best = e
			}
		}
		if best == nil {
			return nil
		}
		return has(*best)
	}
	cells := readAll(t, open(), v, 0, allTime, 0)
	if len(cells) != len(byCell) {
		t.Fatalf("%d cells, want %d", len(cells), len(byCell))
	}
	for _, c := range cells {
		es := byCell[cellID{c.Epoch, c.Window, c.Group}]
		if es == nil {
			t.Fatalf("unexpected cell %d/%d/%q", c.Epoch, c.Window, c.Group)
		}
		amount := func(e pickEvent) any { return e.amount }
		items := func(e pickEvent) any { return e.items }
		country := func(e pickEvent) any { return e.country }
		ts := func(e pickEvent) any { return time.UnixMilli(e.time).UTC() }
		want := []any{int64(len(es)), pick(es, amount, true), pick(es, amount, false), pick(es, items, true), pick(es, items, false),
			pick(es, country, true), pick(es, ts, false), pick(es, ts, true)}
		got := v.Finalize(&c.State)
		for i, m := range v.Measures {
			if g, ok := got[i].(time.Time); ok && g.Equal(want[i].(time.Time)) {
				continue
			}
			if got[i] != want[i] {
				t.Fatalf("cell %d/%d/%q: %s = %v (%T), want %v (%T)", c.Epoch, c.Window, c.Group, m.Name, got[i], got[i], want[i], want[i])
			}
		}
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
