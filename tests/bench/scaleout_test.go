package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// Beyond one machine: the speed layer and the archiver as one `braid`
// process vs two sharing a stream's partitions by leases in Redis (this
// file), failover after kill -9 of a partition's speed process, NATS
// stream leader or Redis master (failover_test.go), and the speed layer
// and merged queries against a Redis Cluster vs one redis-server
// (rediscluster_test.go). Sizes: BRAID_BENCH_*SCALE*, BRAID_BENCH_FAILOVER_*
// and BRAID_BENCH_CLUSTER_* (gen_test.go).

// scalePartitions is the partitions of the scale-out benches' stream.
const scalePartitions = 4

// scaleCatalog is layersCatalog (3 views × 5 measures over orders) with
// the stream in `partitions` partitions by its id, no scheduled batch runs,
// archive files written within 200 ms of a partition's last record and no
// compaction meanwhile.
func scaleCatalog(partitions int) testenv.Catalog {
	c := layersCatalog()
	c.Streams[0].Partitions = partitions
	c.Batch = "every: 0"
	c.Archive = "max_delay: 200ms, compact: false"
	return c
}

// openStackLog opens the event log of a stack's configuration on js, with
// the options and partitions `braid` opens it with, and returns it with
// the configuration and its compiled catalog.
func openStackLog(t *testing.T, st *testenv.Stack, js jetstream.JetStream) (*eventlog.Log, *config.Config, *config.Catalog) {
	t.Helper()
	cfg, err := config.Load(st.Config)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k")) // no PII fields: the key changes nothing
	if err != nil {
		t.Fatal(err)
	}
	parts := map[string]int{}
	for name, s := range cat.Streams {
		parts[name] = s.Partitions
	}
	n := cfg.NATS
	log, err := eventlog.Open(context.Background(), js, cat.StreamOrder, eventlog.Options{Namespace: cfg.Namespace, Partitions: parts,
		Replicas: n.Replicas, DedupWindow: n.DedupWindow.D(), MaxAge: n.MaxAge.D(), MaxMsgs: n.MaxMsgs, MaxBytes: n.MaxBytes,
		DLQMaxAge: cfg.DLQ.MaxAge.D(), DLQMaxRecords: cfg.DLQ.MaxRecords, LateMaxMsgs: cfg.DLQ.MaxLate, PublishTimeout: n.PublishTimeout.D()})
	if err != nil {
		t.Fatal(err)
	}
	return log, cfg, cat
}

// orderRecord is order i of layersCatalog's stream (id "o<i>", 50
// countries, 3 channels) with event time ts, prepared and bound for the
// partition of its id.
func orderRecord(s *logic.Stream, i int, ts int64) (eventlog.Record, error) {
	h := mix(uint64(i))
	raw := fmt.Sprintf(`{"ts":%d,"order_id":"o%d","country":"c%d","channel":%q,"amount":%d.%02d,"items":%d}`,
		ts, i, h%50, []string{"web", "app", "shop"}[(h>>8)%3], (h>>16)%1000, (h>>32)%100, (h>>40)%9)
	ev, rec, err := s.Prepare([]byte(raw), 0)
	if err != nil {
		return eventlog.Record{}, fmt.Errorf("order %d: %w", i, err)
	}
	return eventlog.Record{ID: ev.ID, Data: rec, Part: s.PartitionOf(&ev)}, nil
}

// preload publishes orders [0, n) to the stream with event times spread
// over the span before end (unix ms), each to the partition of its id,
// 4000 events a Publish (a log record of about 1000 events per partition)
// from two goroutines, and returns each partition's last sequence.
func preload(t *testing.T, log *eventlog.Log, s *logic.Stream, n int, end int64, span time.Duration) []uint64 {
	t.Helper()
	const perPublish = 4000
	ctx := context.Background()
	t0 := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := w * perPublish; lo < n; lo += 2 * perPublish {
				recs := make([]eventlog.Record, 0, perPublish)
				for i := lo; i < min(lo+perPublish, n); i++ {
					r, err := orderRecord(s, i, end-1-int64(mix(uint64(i)^0x5eed)%uint64(span.Milliseconds())))
					if err != nil {
						errc <- err
						return
					}
					recs = append(recs, r)
				}
				if err := log.Publish(ctx, s.Name, recs); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	last := lastSeqs(t, log, s.Name)
	t.Logf("log: %d events in %d partitions (last sequences %v), published in %s", n, len(last), last, time.Since(t0).Round(time.Millisecond))
	return last
}

// lastSeqs is the last sequence of each partition of a stream's log.
func lastSeqs(t *testing.T, log *eventlog.Log, stream string) []uint64 {
	t.Helper()
	last := make([]uint64, log.Partitions(stream))
	for p := range last {
		info, err := log.Info(context.Background(), stream, p)
		if err != nil {
			t.Fatal(err)
		}
		last[p] = info.LastSeq
	}
	return last
}

// scalePoint is one run of a layer's processes over the preloaded log.
type scalePoint struct {
	procs       int
	wall        float64 // seconds from the start of the processes until the work was done
	settled     float64 // seconds from their start until they held equal shares of the partitions (0: not before the end)
	doneSettled float64 // the share of the work done then
	cpu         float64 // CPU-seconds (user + system) of the braid processes
	servers     float64 // CPU-seconds meanwhile of Redis and of this process (the embedded nats-server, the polling)
}

// steady is the rate of events/s from the moment the shares were even to
// the end, for n events in all (0 when they were not even before the end).
func (p scalePoint) steady(n int) float64 {
	if p.settled == 0 {
		return 0
	}
	return float64(n) * (1 - p.doneSettled) / (p.wall - p.settled)
}

// redisCPU is a redis-server's CPU-seconds so far (INFO cpu).
func redisCPU(t *testing.T, rdb *redis.Client) float64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("redis INFO cpu: %q: %v", line, err)
			}
			sum += x
		}
	}
	return sum
}

// scaleWork says of a run on the twin tw how far the work is (the share
// of the log's records done: 1 when every partition is done; the records
// hold about as many events each), and checks its outcome once the
// processes are gone.
type scaleWork func(tw *testenv.Stack) (progress func() float64, check func())

// scaleRun starts k `braid <layer>` processes (GOMAXPROCS=1 each) on a
// twin of st (a data_dir of its own: a fresh lake) after emptying Redis
// (positions, state and leases of the run before), and waits until the
// work is done; then it kills them (SIGKILL: their CPU is counted up to
// the end of the work, not a shutdown) and checks the outcome.
func scaleRun(t *testing.T, st *testenv.Stack, layer string, k int, rdb *redis.Client, work scaleWork) scalePoint {
	t.Helper()
	ctx := context.Background()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	tw := st.Twin()
	progress, check := work(tw)
	env := append(tw.Env(), "GOMAXPROCS=1")
	self0, redis0 := cpuSeconds(t), redisCPU(t, rdb)
	t0 := time.Now()
	procs := make([]*testenv.Proc, k)
	for i := range procs {
		procs[i] = testenv.StartBraidEnv(t, "", env, layer, "--config", tw.Config)
	}
	pt := scalePoint{procs: k}
	for {
		done := progress()
		if done >= 1 {
			break
		}
		if pt.settled == 0 && evenShares(ctx, rdb, tw.Namespace, layer, k) {
			pt.settled, pt.doneSettled = time.Since(t0).Seconds(), done
		}
		if time.Since(t0) > 5*time.Minute {
			t.Fatalf("%d braid %s processes did not finish within 5 minutes\n%s", k, layer, procs[0].Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	pt.wall = time.Since(t0).Seconds()
	pt.servers = cpuSeconds(t) - self0 + redisCPU(t, rdb) - redis0
	for _, p := range procs {
		p.Kill(t)
		ps := p.Cmd.ProcessState
		pt.cpu += (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	check()
	return pt
}

// evenShares says whether k members of a role hold the leases of the
// stream's partitions, each as many.
func evenShares(ctx context.Context, rdb redis.UniversalClient, ns, role string, k int) bool {
	parts := make([]leases.Partition, scalePartitions)
	for p := range parts {
		parts[p] = leases.Partition{Stream: "orders", P: p}
	}
	held, err := leases.Owners(ctx, rdb, ns, role, parts)
	if err != nil {
		return false
	}
	count := map[string]int{}
	for _, owner := range held {
		if owner == "" {
			return false
		}
		count[owner]++
	}
	if len(count) != k {
		return false
	}
	for _, c := range count {
		if c != scalePartitions/k {
			return false
		}
	}
	return true
}

// twoThreads times a fixed amount of hashing on one goroutine and split
// between two, each on a thread of its own, three times each, and returns
// the fastest of each: their ratio is what the machine offers two busy
// threads (2.0 on two idle cores); the fastest, because the others' load
// only ever slows a run down.
func twoThreads() (one, two time.Duration) {
	const work = 1 << 27
	spin := func(n int) uint64 {
		var x uint64
		for i := range n {
			x += mix(uint64(i))
		}
		return x
	}
	run := func(k int) time.Duration {
		var wg sync.WaitGroup
		sink := make([]uint64, k)
		t0 := time.Now()
		for i := range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				sink[i] = spin(work / k)
			}()
		}
		wg.Wait()
		return time.Since(t0)
	}
	one, two = time.Hour, time.Hour
	for range 3 {
		one, two = min(one, run(1)), min(two, run(2))
	}
	return one, two
}

// scaleOut runs the layer as one process and as two, reps times
// alternating (1, 2, 1, 2, …); the fastest run of each count is kept (on
// a shared machine the others' load only ever slows a run down), and
// what the machine offers two threads (twoThreads after each pair, the
// fastest times of all).
func scaleOut(t *testing.T, st *testenv.Stack, layer string, reps int, rdb *redis.Client, work scaleWork) (one, two scalePoint, machine float64) {
	t.Helper()
	best := map[int]scalePoint{}
	single, double := time.Hour, time.Hour
	for rep := range reps {
		for _, k := range []int{1, 2} {
			pt := scaleRun(t, st, layer, k, rdb, work)
			t.Logf("rep %d: %d braid %s: %.2fs wall (shares even after %.2fs, %.0f%% done), %.2f CPU-s, Redis + NATS %.2f CPU-s (load average %s)", rep, k, layer, pt.wall, pt.settled, 100*pt.doneSettled, pt.cpu, pt.servers, loadAvg())
			if b, ok := best[k]; !ok || pt.wall < b.wall {
				best[k] = pt
			}
		}
		o, d := twoThreads()
		single, double = min(single, o), min(double, d)
	}
	return best[1], best[2], single.Seconds() / double.Seconds()
}

// loadAvg is the machine's 1-minute load average ("?" when unknown).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// reportScale reports a scale-out: two processes' rate against one's
// (ratio: the speedup) and their CPU per million events against one's.
func reportScale(t *testing.T, name string, n int, reps int, one, two scalePoint, machine float64) {
	m := float64(n) / 1e6
	label := sizeLabel(n)
	report(t, name+"_"+label+"_two_rate", float64(n)/two.wall, "events/s", float64(n)/one.wall)
	report(t, name+"_"+label+"_two_cpu_per_Mevents", two.cpu/m*1000, "ms/Mevents", one.cpu/m*1000)
	if one.steady(n) > 0 && two.steady(n) > 0 {
		report(t, name+"_"+label+"_two_steady_rate", two.steady(n), "events/s", one.steady(n))
	}
	cores := func(p scalePoint) float64 { return (p.cpu + p.servers) / p.wall }
	fmt.Printf("bench: %s %s events in %d partitions, GOMAXPROCS=1 per process, best of %d: two/one %.2fx (aim >= 1.5x; two busy threads on this machine meanwhile %.2fx), CPU per M events two/one %.2fx (aim <= 1.15x); one %.2fs %.3f CPU-s/Mevents, two %.2fs %.3f CPU-s/Mevents; two's shares even after %.2fs with %.0f%% done, from then on two/one %.2fx; Redis and NATS share the 2 cores: %.1f / %.1f cores busy in all with one / two\n",
		name, label, scalePartitions, reps, one.wall/two.wall, machine, two.cpu/one.cpu, one.wall, one.cpu/m, two.wall, two.cpu/m, two.settled, 100*two.doneSettled, two.steady(n)/one.steady(n), cores(one), cores(two))
}

// shareDone is the share of the records up to last (per partition) that
// seqs have passed: 1 once every partition is at its last.
func shareDone(seqs, last []uint64) float64 {
	var done, all uint64
	for p, l := range last {
		done += min(seqs[p], l)
		all += l
	}
	if done == all {
		return 1
	}
	return float64(done) / float64(all)
}

// speedCount is measure `count` of view v over all its speed cells: the
// events the speed state counts.
func speedCount(t *testing.T, store *speedstore.Store, v *logic.View, count string) int64 {
	t.Helper()
	now := time.Now().UnixMilli()
	cells, err := store.Read(context.Background(), v, now-7*24*3600*1000, now+24*3600*1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	st := v.NewState()
	for _, c := range cells {
		v.MergeState(&st, c.State)
	}
	vals := v.Finalize(&st)
	for i, m := range v.Measures {
		if m.Name == count {
			switch x := vals[i].(type) {
			case int64:
				return x
			case float64:
				return int64(x)
			}
			t.Fatalf("measure %s is a %T", count, vals[i])
		}
	}
	t.Fatalf("view %s has no measure %s", v.Name, count)
	return 0
}

// TestBenchSpeedScaleOut: the same events, preloaded into a log of 4
// partitions (event times in the last 10 minutes: live traffic), folded
// into Redis by one `braid speed` process and by two sharing the
// partitions, from their start until every partition's position reaches
// its log's last record. Both end with every record folded.
func TestBenchSpeedScaleOut(t *testing.T) {
	benchOnly(t)
	n := envInt(t, "BRAID_BENCH_SPEED_SCALE_EVENTS", 4_000_000)
	reps := envInt(t, "BRAID_BENCH_SCALE_REPS", 2)
	ctx := context.Background()
	st := testenv.NewStack(t, scaleCatalog(scalePartitions).YAML(), testenv.WithNATS())
	_, js := st.NATS.JetStream(t)
	log, _, cat := openStackLog(t, st, js)
	last := preload(t, log, cat.Streams["orders"], n, time.Now().UnixMilli(), 10*time.Minute)
	rdb := st.Redis.Client(t)
	store := speedstore.New(rdb, st.Namespace)
	hourly := cat.Views["hourly"]
	one, two, machine := scaleOut(t, st, "speed", reps, rdb, func(*testenv.Stack) (func() float64, func()) {
		progress := func() float64 {
			var seqs []uint64
			for p := range last {
				pos, _, err := store.Position(ctx, "orders", p)
				if err != nil {
					return 0
				}
				seqs = append(seqs, pos.Seq)
			}
			return shareDone(seqs, last)
		}
		check := func() {
			if c := speedCount(t, store, hourly, "n"); c != int64(n) {
				t.Fatalf("the speed state counts %d events, want %d", c, n)
			}
		}
		return progress, check
	})
	reportScale(t, "speed_scaleout", n, reps, one, two, machine)
}

// TestBenchArchiveScaleOut: the same with `braid archive`, from the start
// of the processes until every partition's lake checkpoint reaches its
// log's last record (the lake on local files shared by the processes).
func TestBenchArchiveScaleOut(t *testing.T) {
	benchOnly(t)
	n := envInt(t, "BRAID_BENCH_ARCHIVE_SCALE_EVENTS", 2_000_000)
	reps := envInt(t, "BRAID_BENCH_SCALE_REPS", 2)
	st := testenv.NewStack(t, scaleCatalog(scalePartitions).YAML(), testenv.WithNATS())
	_, js := st.NATS.JetStream(t)
	log, _, cat := openStackLog(t, st, js)
	last := preload(t, log, cat.Streams["orders"], n, time.Now().UnixMilli(), 10*time.Minute)
	rdb := st.Redis.Client(t)
	one, two, machine := scaleOut(t, st, "archive", reps, rdb, func(tw *testenv.Stack) (func() float64, func()) {
		dir := filepath.Join(tw.DataDir, "lake")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		lk, err := lake.OpenReadOnly(dir)
		if err != nil {
			t.Fatal(err)
		}
		progress := func() float64 {
			var seqs []uint64
			for p := range last {
				cp, err := lk.PartCheckpoint("orders", p)
				if err != nil {
					return 0
				}
				seqs = append(seqs, cp.Seq)
			}
			return shareDone(seqs, last)
		}
		check := func() {
			m, err := lk.Manifest(context.Background(), "orders")
			if err != nil {
				t.Fatal(err)
			}
			var rows int64
			for _, f := range m.Files {
				rows += f.Rows
			}
			if rows != int64(n) {
				t.Fatalf("the lake holds %d rows in %d files, want %d", rows, len(m.Files), n)
			}
		}
		return progress, check
	})
	reportScale(t, "archive_scaleout", n, reps, one, two, machine)
}
