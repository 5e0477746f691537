package speedstore_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// usageTruth measures a state key's cost the slow way: every key under
// the state's prefix (SCAN), each one's MEMORY USAGE, and each cell
// hash's "s" fields (HKEYS).
func usageTruth(t *testing.T, rdb redis.UniversalClient, keys func(pattern string) []string, ns string, v *logic.View) speedstore.Usage {
	t.Helper()
	ctx := context.Background()
	var u speedstore.Usage
	for p := range v.Stream.Partitions {
		prefix := ns + ":v:" + speedstore.Tag(v.Stream.Name, p) + ":" + v.StateKey() + ":"
		for _, k := range keys(prefix + "*") {
			u.Keys++
			mem, err := rdb.MemoryUsage(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			u.Bytes += mem
			if strings.HasSuffix(k, ":idx") || strings.Count(strings.TrimPrefix(k, prefix), ":") != 1 {
				continue // the index, a HyperLogLog
			}
			fields, err := rdb.HKeys(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fields {
				if strings.HasSuffix(f, "\x1es") {
					u.Cells++
				}
			}
		}
	}
	return u
}

// TestUsage: a view's cost in Redis as Usage measures it equals the
// figures read key by key (exact within the budget), on a redis-server
// and on a Redis Cluster; over a sample it is scaled up to about the same;
// a state with no cells costs nothing.
func TestUsage(t *testing.T) {
	ctx := context.Background()
	redisServers(t, func(t *testing.T, rdb redis.UniversalClient, keys func(pattern string) []string) {
		ns := testenv.Namespace(t)
		st := speedstore.New(rdb, ns)
		v := storagetest.SpeedViewPartitioned(t, 2)
		if u, err := st.Usage(ctx, v.Stream, v.StateKey(), speedstore.UsageBudget{}); err != nil || u != (speedstore.Usage{Exact: true}) {
			t.Fatalf("usage of no state: %+v %v", u, err)
		}
		// Every (epoch, window) of each partition holds every country, each
		// with the same amounts: its hashes are alike, so a sample stands
		// for all of them.
		cells := 0
		for p := range 2 {
			var evs []storagetest.SpeedEvent
			for e := range 5 {
				for w := range 10 {
					for _, c := range []string{"DE", "FR", "US", "JP"} {
						for k := range 5 {
							evs = append(evs, storagetest.SpeedEvent{Epoch: int64(e) * 10000, Time: int64(w)*60000 + int64(k), Country: c,
								Amount: float64(10 * (k + 1)), Items: int64(k + p)})
						}
						cells++
					}
				}
			}
			if err := st.Commit(ctx, "orders", p, 0, speedstore.Position{Seq: uint64(len(evs))}, 0, []*logic.Delta{storagetest.FoldSpeed(v, evs)}); err != nil {
				t.Fatal(err)
			}
		}
		truth := usageTruth(t, rdb, keys, ns, v)
		if truth.Cells != int64(cells) {
			t.Fatalf("fixture: %d cells in Redis, %d folded", truth.Cells, cells)
		}
		u, err := st.Usage(ctx, v.Stream, v.StateKey(), speedstore.UsageBudget{})
		if err != nil {
			t.Fatal(err)
		}
		if !u.Exact || u.Cells != truth.Cells || u.Keys != truth.Keys || u.Bytes != truth.Bytes {
			t.Fatalf("usage %+v, read key by key %+v", u, truth)
		}
		t.Logf("%d cells, %d keys, %d bytes", u.Cells, u.Keys, u.Bytes)

		// 10 of the 50 hashes of each partition, and of them, the fields of
		// one; then every hash, the fields of one.
		near := func(got, want int64) bool { return math.Abs(float64(got-want)) <= 0.1*float64(want) }
		for _, b := range []speedstore.UsageBudget{{Hashes: 10}, {Hashes: 10, Fields: 20}, {Fields: 20}} {
			s, err := st.Usage(ctx, v.Stream, v.StateKey(), b)
			if err != nil {
				t.Fatal(err)
			}
			if s.Exact || s.Cells != truth.Cells || s.Keys != truth.Keys || !near(s.Bytes, truth.Bytes) {
				t.Fatalf("usage over %+v: %+v, read key by key %+v", b, s, truth)
			}
		}

		// Dropped: nothing left.
		for p := range 2 {
			if err := st.DropState(ctx, "orders", p, v.StateKey()); err != nil {
				t.Fatal(err)
			}
		}
		if u, err := st.Usage(ctx, v.Stream, v.StateKey(), speedstore.UsageBudget{}); err != nil || u != (speedstore.Usage{Exact: true}) {
			t.Fatalf("usage after the state was dropped: %+v %v", u, err)
		}
	})
}
