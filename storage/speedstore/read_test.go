package speedstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// manyGroups folds one event per group into one window (one cell hash of
// n groups), plus rng's events over a few windows and epochs.
func manyGroups(n int, rng *rand.Rand) []storagetest.SpeedEvent {
	evs := storagetest.RandomSpeedEvents(rng, 3000)
	for i := 0; i < n; i++ {
		evs = append(evs, storagetest.SpeedEvent{Epoch: 20000, Time: 120000, Country: fmt.Sprintf("g%06d", i), Amount: float64(i) + 0.5, Items: int64(i % 9)})
	}
	return evs
}

// TestReadInBoundedRoundTrips reads a view whose cells are a large hash
// (scanned in parts) among small ones (fetched whole, several per round
// trip) with small bounds, and gets the same cells as the direct
// computation: no field counted twice, none missed.
func TestReadInBoundedRoundTrips(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	v := storagetest.SpeedView(t)
	evs := manyGroups(5000, rand.New(rand.NewPCG(5, 6)))
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{storagetest.FoldSpeed(v, evs)}); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][4]int{{1000, 16384, 4096, 1000}, {3, 40, 7, 5}, {1, 1, 1, 1}, {7, 600, 333, 2}} {
		speedstore.SetReadBounds(t, b[0], b[1], b[2], b[3])
		cells, err := st.Read(ctx, v, 0, 1<<40, 0)
		if err != nil {
			t.Fatal(err)
		}
		storagetest.CheckSpeedCells(t, v, cells, storagetest.ExpectedSpeedCells(evs, 0, 0, 1<<40))
		cells, err = st.Read(ctx, v, 60000, 180000, 10000)
		if err != nil {
			t.Fatal(err)
		}
		want := storagetest.ExpectedSpeedCells(evs, 10000, 0, 1<<40)
		for k := range want {
			if k[1] < 60000 || k[1] >= 180000 {
				delete(want, k)
			}
		}
		storagetest.CheckSpeedCells(t, v, cells, want)
	}
}

// TestReadSketchesInParts: distinct and quantile sketches of groups read
// from a scanned hash equal those read whole.
func TestReadSketchesInParts(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	s := storagetest.SpeedView(t).Stream
	v, err := logic.NewView("sk", logic.ViewDef{Stream: "orders", Window: 60e9, GroupBy: []string{"country"}, Measures: []logic.MeasureDef{
		{Name: "kinds", Expr: "count_distinct(items)"}, {Name: "p50", Expr: "quantile(amount, 0.5)"}, {Name: "n", Expr: "count()"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var evs []storagetest.SpeedEvent
	for i := 0; i < 6000; i++ {
		evs = append(evs, storagetest.SpeedEvent{Epoch: 0, Time: int64(rng.IntN(2)) * 60000, Country: fmt.Sprintf("g%03d", rng.IntN(400)), Amount: rng.ExpFloat64() * 100, Items: int64(rng.IntN(50))})
	}
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{storagetest.FoldSpeed(v, evs)}); err != nil {
		t.Fatal(err)
	}
	whole, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	speedstore.SetReadBounds(t, 1, 50, 17, 3)
	parts, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 800 || len(parts) != len(whole) {
		t.Fatalf("%d cells read whole, %d in parts, want 800", len(whole), len(parts))
	}
	byKey := map[string]logic.State{}
	for _, c := range whole {
		byKey[fmt.Sprint(c.Window, c.Group)] = c.State
	}
	for _, c := range parts {
		w := byKey[fmt.Sprint(c.Window, c.Group)]
		if fmt.Sprint(v.Finalize(&w)) != fmt.Sprint(v.Finalize(&c.State)) || !w.HLL[0].Equal(c.State.HLL[0]) || len(w.Q[0]) != len(c.State.Q[0]) {
			t.Fatalf("cell %d %q: %v in parts, %v whole", c.Window, c.Group, v.Finalize(&c.State), v.Finalize(&w))
		}
		for b, n := range w.Q[0] {
			if c.State.Q[0][b] != n {
				t.Fatalf("cell %d %q: bucket %d = %v in parts, %v whole", c.Window, c.Group, b, c.State.Q[0][b], n)
			}
		}
	}
}

// netOut is the bytes Redis has sent to its clients.
func netOut(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	s, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_output_bytes:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no total_net_output_bytes in INFO stats")
	return 0
}

// TestReadEachStopsEarly: a read whose callback refuses a cell stops
// there, with the callback's error, after reading about as many cells, not
// the whole; a read whose context is cancelled stops with the context's
// error.
func TestReadEachStopsEarly(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	st := speedstore.New(rdb, testenv.Namespace(t))
	v := storagetest.SpeedView(t)
	evs := manyGroups(60000, rand.New(rand.NewPCG(9, 10)))
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{storagetest.FoldSpeed(v, evs)}); err != nil {
		t.Fatal(err)
	}
	before := netOut(t, rdb)
	all, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	full := netOut(t, rdb) - before
	if n := len(all); n < 60000 {
		t.Fatalf("%d cells", n)
	}
	enough := errors.New("enough")
	before = netOut(t, rdb)
	n := 0
	err = st.ReadEach(ctx, v, 0, 1<<40, 0, func(speedstore.Cell) error {
		if n++; n > 5000 {
			return enough
		}
		return nil
	})
	stopped := netOut(t, rdb) - before
	if err != enough { //nolint:errorlint // the callback's error comes back as is
		t.Fatalf("a read stopped by its callback: %v", err)
	}
	t.Logf("Redis sent %d KiB for the whole read, %d KiB for the read stopped at 5000 cells", full>>10, stopped>>10)
	if stopped > full/4 {
		t.Fatalf("the read stopped at 5000 of %d cells had %d of %d bytes sent", len(all), stopped, full)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.Read(cctx, v, 0, 1<<40, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled read: %v", err)
	}
	// Cancelled during the read: it stops at the next round trip.
	cctx, cancel = context.WithCancel(ctx)
	defer cancel()
	before = netOut(t, rdb)
	n = 0
	err = st.ReadEach(cctx, v, 0, 1<<40, 0, func(speedstore.Cell) error {
		if n++; n == 100 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a read cancelled on its way: %v", err)
	}
	if sent := netOut(t, rdb) - before; sent > full/4 {
		t.Fatalf("the read cancelled after 100 cells had %d of %d bytes sent", sent, full)
	}
}

// TestScanDuringCommits: while commits add groups to a large hash (Redis
// rehashes it, and a scan may see fields twice), reads in parts never
// count a field twice: every group's count is at most the commits done.
func TestScanDuringCommits(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	v := storagetest.SpeedView(t)
	speedstore.SetReadBounds(t, 10, 64, 50, 10)
	const commits = 40
	var done sync.WaitGroup
	// started counts the commits begun: one may be applied in Redis before
	// Commit returns, so a read's bound is what was started, not finished.
	var started, finished atomic.Int64
	errs := make(chan error, 1)
	done.Add(1)
	go func() {
		defer done.Done()
		for c := 1; c <= commits; c++ {
			var evs []storagetest.SpeedEvent
			// Every earlier group once more, and 200 new ones.
			for g := 0; g < 200*c; g++ {
				evs = append(evs, storagetest.SpeedEvent{Epoch: 0, Time: 0, Country: fmt.Sprintf("g%05d", g), Amount: 1})
			}
			started.Add(1)
			if err := st.Commit(ctx, "orders", 0, uint64(c-1), speedstore.Position{Seq: uint64(c)}, 0, []*logic.Delta{storagetest.FoldSpeed(v, evs)}); err != nil {
				errs <- err
				finished.Store(commits)
				return
			}
			finished.Add(1)
		}
	}()
	reads := 0
	for {
		last := finished.Load() == commits // every commit done before this read
		cells, err := st.Read(ctx, v, 0, 1<<40, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := int(started.Load())
		for _, c := range cells {
			var g int
			fmt.Sscanf(c.Group[1:], "g%d", &g)
			// Group g joined at commit g/200+1: it has been counted at most
			// n-g/200 times.
			if got := v.Finalize(&c.State)[0].(int64); got > int64(n-g/200) {
				t.Fatalf("group %q counted %d times after %d commits", c.Group, got, n)
			}
		}
		reads++
		if last {
			break
		}
	}
	done.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("%d reads during %d commits", reads, commits)
}
