package speedstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// failoverRecord returns the events of record r of partition p (20, the
// same on every call), their countries marked with the partition so that
// each partition's cells are groups of their own.
func failoverRecord(p, r int) []storagetest.SpeedEvent {
	evs := storagetest.RandomSpeedEvents(rand.New(rand.NewPCG(uint64(p), uint64(r))), 20)
	for i := range evs {
		evs[i].Country += fmt.Sprint(p)
	}
	return evs
}

// failoverEvents returns the events of records 1..n of partition p.
func failoverEvents(p int, n uint64) []storagetest.SpeedEvent {
	var out []storagetest.SpeedEvent
	for r := 1; r <= int(n); r++ {
		out = append(out, failoverRecord(p, r)...)
	}
	return out
}

// partitionWriter commits one partition's records as the speed layer
// does: five records at a time from the stored position, starting over
// from Position after any error; it counts what happened.
type partitionWriter struct {
	p        int
	commits  atomic.Int64 // successful commits
	failures atomic.Int64 // errors (Position or Commit)
	mu       sync.Mutex
	firstErr time.Time // the first error
	lastErr  time.Time // the last error
	lastOK   time.Time // the last successful commit
	errText  string    // the last error
}

func (w *partitionWriter) run(ctx context.Context, st *speedstore.Store, v *logic.View) {
	for ctx.Err() == nil {
		err := w.step(ctx, st, v)
		w.mu.Lock()
		if err != nil {
			if w.firstErr.IsZero() {
				w.firstErr = time.Now()
			}
			w.lastErr, w.errText = time.Now(), err.Error()
			w.failures.Add(1)
		} else {
			w.lastOK = time.Now()
			w.commits.Add(1)
		}
		w.mu.Unlock()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (w *partitionWriter) step(ctx context.Context, st *speedstore.Store, v *logic.View) error {
	pos, _, err := st.Position(ctx, "orders", w.p)
	if err != nil {
		return err
	}
	next := pos.Seq + 5
	var evs []storagetest.SpeedEvent
	for r := pos.Seq + 1; r <= next; r++ {
		evs = append(evs, failoverRecord(w.p, int(r))...)
	}
	return st.Commit(ctx, "orders", w.p, pos.Seq, speedstore.Position{Seq: next, LastArrival: int64(next)}, 0, []*logic.Delta{storagetest.FoldSpeed(v, evs)})
}

// recovered reports whether the writer has failed and committed since.
func (w *partitionWriter) recovered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.lastErr.IsZero() && w.lastOK.After(w.lastErr)
}

// TestClusterFailover kills (SIGKILL) the master holding one partition's
// slot while four writers commit to four partitions of a stream. Commits
// fail for a while (the node is gone, then the cluster elects its replica
// and the client reloads its slot map) and then succeed again, within 30
// s. Replication being asynchronous, the new master may have lost the
// last commits: afterwards, for every partition, the cells equal the fold
// of exactly the records up to the stored position (state and position
// roll back together, never one without the other). The killed node,
// restarted, rejoins as a replica and nothing changes.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a failover takes seconds; make test runs it")
	}
	ctx := context.Background()
	c := testenv.StartRedisCluster(t)
	ns := testenv.Namespace(t)
	const parts = 4
	v := storagetest.SpeedViewPartitioned(t, parts)
	victim := c.MasterOf(t, ns+":pos:"+speedstore.Tag("orders", 1))
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	writers := make([]*partitionWriter, parts)
	var wg sync.WaitGroup
	for p := range writers {
		writers[p] = &partitionWriter{p: p}
		st := speedstore.New(c.Client(t), ns)
		wg.Add(1)
		go func() {
			defer wg.Done()
			writers[p].run(wctx, st, v)
		}()
	}
	waitFor(t, 30*time.Second, "commits on every partition before the kill", func() bool {
		for _, w := range writers {
			if w.commits.Load() < 10 {
				return false
			}
		}
		return true
	})
	for _, w := range writers {
		if n := w.failures.Load(); n > 0 {
			t.Fatalf("partition %d: %d failures before the kill: %s", w.p, n, w.errText)
		}
	}
	killed := time.Now()
	c.Kill(victim)
	t.Logf("killed node %d (%s), the master of partition 1", victim, c.Nodes[victim].Addr)
	waitFor(t, 30*time.Second, "every partition committing again after the failover", func() bool {
		if writers[1].failures.Load() == 0 {
			return false
		}
		for _, w := range writers {
			if w.failures.Load() > 0 && !w.recovered() {
				return false
			}
		}
		return true
	})
	stop()
	wg.Wait()
	for _, w := range writers {
		if w.failures.Load() == 0 {
			t.Logf("partition %d: %d commits, no failure", w.p, w.commits.Load())
			continue
		}
		t.Logf("partition %d: %d commits, %d failures from %v to %v after the kill (last: %s); committing again %v after it",
			w.p, w.commits.Load(), w.failures.Load(), w.firstErr.Sub(killed).Round(time.Millisecond),
			w.lastErr.Sub(killed).Round(time.Millisecond), w.errText, w.lastOK.Sub(killed).Round(time.Millisecond))
	}
	st := speedstore.New(c.Client(t), ns)
	check := func() {
		t.Helper()
		var all []storagetest.SpeedEvent
		for p := range parts {
			pos, found, err := st.Position(ctx, "orders", p)
			if err != nil || !found {
				t.Fatalf("partition %d: position %v %v", p, found, err)
			}
			if pos.LastArrival != int64(pos.Seq) {
				t.Fatalf("partition %d: position %+v, last arrival not the one committed with it", p, pos)
			}
			all = append(all, failoverEvents(p, pos.Seq)...)
		}
		cells, err := st.Read(ctx, v, 0, 1<<40, 0)
		if err != nil {
			t.Fatal(err)
		}
		storagetest.CheckSpeedCells(t, v, cells, storagetest.ExpectedSpeedCells(all, 0, 0, 1<<40))
	}
	check()
	// The commit notices of every partition are heard again: the
	// subscription of partition 1's channel moved to the new master.
	nctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notices := st.SubscribeCommits(nctx, []*logic.Stream{v.Stream})
	heard := map[int]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(heard) < parts {
		if time.Now().After(deadline) {
			t.Fatalf("notices of partitions %v only, 30s after the failover", heard)
		}
		for p := range parts {
			if err := (&partitionWriter{p: p}).step(ctx, st, v); err != nil {
				t.Fatal(err)
			}
		}
		for drained := false; !drained; {
			select {
			case n := <-notices:
				heard[n.Part] = true
			case <-time.After(200 * time.Millisecond):
				drained = true
			}
		}
	}
	cancel()
	c.Restart(t, victim)
	check()
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// redisServers are the two kinds of Redis the store runs on: a
// redis-server, and a Redis Cluster through a cluster client.
func redisServers(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient, keys func(pattern string) []string)) {
	t.Run("Server", func(t *testing.T) {
		rdb := testenv.StartRedis(t).Client(t)
		fn(t, rdb, func(pattern string) []string {
			keys, err := rdb.Keys(context.Background(), pattern).Result()
			if err != nil {
				t.Fatal(err)
			}
			return keys
		})
	})
	t.Run("Cluster", func(t *testing.T) {
		rdb := testenv.StartRedisCluster(t).Client(t)
		fn(t, rdb, func(pattern string) []string {
			var mu sync.Mutex
			var out []string
			err := rdb.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
				keys, err := c.Keys(ctx, pattern).Result()
				mu.Lock()
				out = append(out, keys...)
				mu.Unlock()
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		})
	})
}

// TestDropLegacy writes a stream's state as a store wrote it before
// streams had partitions (position, lease, index, cell hashes and their
// distinct sketches in keys without a hash tag), beside the partitioned
// state of the same stream and view and the unpartitioned state of
// another stream: DropLegacy deletes exactly the first, twice in a row.
func TestDropLegacy(t *testing.T) {
	redisServers(t, func(t *testing.T, rdb redis.UniversalClient, keys func(string) []string) {
		ctx := context.Background()
		ns := testenv.Namespace(t)
		st := speedstore.New(rdb, ns)
		v := storagetest.SpeedViewPartitioned(t, 2)
		sk := v.StateKey()
		evs := storagetest.RandomSpeedEvents(rand.New(rand.NewPCG(1, 2)), 500)
		for p := range 2 {
			if err := st.Commit(ctx, "orders", p, 0, speedstore.Position{Seq: 9}, 0, []*logic.Delta{storagetest.FoldSpeed(v, evs)}); err != nil {
				t.Fatal(err)
			}
		}
		legacy := func(stream string) {
			pipe := rdb.Pipeline()
			pipe.HSet(ctx, ns+":pos:"+stream, "seq", "7", "wm", "1", "v:"+sk, "7")
			pipe.Set(ctx, ns+":lease:"+stream, "old", time.Minute)
			for e := range 600 { // more than one chunk of the index
				m := fmt.Sprintf("%d:%d", e*10000, 60000)
				cell := ns + ":v:" + sk + ":" + m
				pipe.ZAdd(ctx, ns+":v:"+sk+":idx", redis.Z{Score: float64(e * 10000), Member: m})
				pipe.HSet(ctx, cell, "sDE\x1es", "12345678", "sDE\x1eh0", "1", "sFR\x1eq0:3", "2")
				pipe.PFAdd(ctx, cell+":h0:sDE", "a", "b")
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		legacy("orders")
		before := keys(ns + ":*")
		for range 2 {
			if err := st.DropLegacy(ctx, "orders", []string{sk}); err != nil {
				t.Fatal(err)
			}
		}
		after := keys(ns + ":*")
		var left []string
		for _, k := range after {
			if !strings.Contains(k, "{orders.") {
				left = append(left, k)
			}
		}
		if len(left) > 0 {
			t.Fatalf("%d legacy keys left, e.g. %q", len(left), left[0])
		}
		var tagged int
		for _, k := range before {
			if strings.Contains(k, "{orders.") {
				tagged++
			}
		}
		if tagged == 0 || tagged != len(after) {
			t.Fatalf("%d partitioned keys before, %d keys after", tagged, len(after))
		}
		cells, err := st.Read(ctx, v, 0, 1<<40, 0)
		if err != nil {
			t.Fatal(err)
		}
		storagetest.CheckSpeedCells(t, v, cells, storagetest.ExpectedSpeedCells(slices.Concat(evs, evs), 0, 0, 1<<40))
		// Another stream's legacy state is not this stream's: the position
		// and lease stay (the cells are the state key's, dropped with it).
		legacy("clicks")
		if err := st.DropLegacy(ctx, "orders", nil); err != nil {
			t.Fatal(err)
		}
		if n := len(keys(ns + ":*:clicks")); n != 2 {
			t.Fatalf("%d of the other stream's position and lease left, want 2", n)
		}
	})
}

// TestPositionWithoutLastArrival: a position stored before Position kept
// the last arrival reads it as 0, and the next commit stores it.
func TestPositionWithoutLastArrival(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(rdb, ns)
	v := storagetest.SpeedView(t)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 3, Watermark: 9, LastArrival: 77}, 0, []*logic.Delta{v.NewDelta()}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(ctx, ns+":pos:"+speedstore.Tag("orders", 0), "la").Err(); err != nil {
		t.Fatal(err)
	}
	if pos, found, err := st.Position(ctx, "orders", 0); err != nil || !found || pos.Seq != 3 || pos.Watermark != 9 || pos.LastArrival != 0 {
		t.Fatalf("old position: %+v %v %v", pos, found, err)
	}
	if err := st.Commit(ctx, "orders", 0, 3, speedstore.Position{Seq: 4, LastArrival: 88}, 0, []*logic.Delta{v.NewDelta()}); err != nil {
		t.Fatal(err)
	}
	if pos, _, err := st.Position(ctx, "orders", 0); err != nil || pos.LastArrival != 88 {
		t.Fatalf("position after a commit: %+v %v", pos, err)
	}
}

// TestCommitNotices: commits and a rebuild's join announce the new
// sequence on the partition's channel, by SPUBLISH through a cluster
// client, by PUBLISH through a client of one server, and SubscribeCommits
// hears them all, each once, with its stream and partition.
func TestCommitNotices(t *testing.T) {
	redisServers(t, func(t *testing.T, rdb redis.UniversalClient, _ func(string) []string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := speedstore.New(rdb, testenv.Namespace(t))
		_, cluster := rdb.(*redis.ClusterClient)
		if st.ShardedNotices() != cluster {
			t.Fatalf("sharded notices %v over a cluster client %v", st.ShardedNotices(), cluster)
		}
		v := storagetest.SpeedViewPartitioned(t, 3)
		notices := st.SubscribeCommits(ctx, []*logic.Stream{v.Stream})
		// Commits until the subscriptions hear one of each partition
		// (they are made in the background).
		ready := map[int]bool{}
		seq := make([]uint64, 3)
		deadline := time.Now().Add(30 * time.Second)
		for len(ready) < 3 {
			for p := range 3 {
				if err := st.Commit(ctx, "orders", p, seq[p], speedstore.Position{Seq: seq[p] + 1}, 0, []*logic.Delta{v.NewDelta()}); err != nil {
					t.Fatal(err)
				}
				seq[p]++
			}
			for drained := false; !drained; {
				select {
				case n := <-notices:
					ready[n.Part] = true
				case <-time.After(100 * time.Millisecond):
					drained = true
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("notices of partitions %v only after 30s", ready)
			}
		}
		want := map[speedstore.CommitNotice]int{}
		for p := range 3 {
			if err := st.Commit(ctx, "orders", p, seq[p], speedstore.Position{Seq: 100 + uint64(p)}, 0, []*logic.Delta{v.NewDelta()}); err != nil {
				t.Fatal(err)
			}
			want[speedstore.CommitNotice{Stream: "orders", Part: p, Seq: 100 + uint64(p)}]++
		}
		other := storagetest.SpeedView(t)
		if _, err := st.BeginRebuild(ctx, "orders", 1, other.StateKey(), 0); err != nil {
			t.Fatal(err)
		}
		if joined, err := st.CommitRebuild(ctx, "orders", 1, 0, 1, 101, other.NewDelta()); err != nil || !joined {
			t.Fatalf("rebuild: joined %v, %v", joined, err)
		}
		want[speedstore.CommitNotice{Stream: "orders", Part: 1, Seq: 101}]++
		for left := 4; left > 0; left-- {
			select {
			case n := <-notices:
				if want[n] == 0 {
					t.Fatalf("notice %+v, want %v", n, want)
				}
				want[n]--
			case <-time.After(30 * time.Second):
				t.Fatalf("%d notices missing after 30s: %v", left, want)
			}
		}
		cancel()
		for range notices { // closed once every subscription ended
		}
	})
}
