package bench

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// failoverBed is the failover bench's deployment: a 3-node NATS cluster
// (R3 streams), a 6-node Redis Cluster, two `braid speed` processes
// sharing the 4 partitions of orders, and this process publishing orders
// without pause.
type failoverBed struct {
	t     *testing.T
	nats  *testenv.NATSCluster
	redis *testenv.RedisCluster
	st    *testenv.Stack
	log   *eventlog.Log
	s     *logic.Stream // orders
	js    jetstream.JetStream
	rdb   redis.UniversalClient
	store *speedstore.Store
	speed [2]*testenv.Proc
}

// TestBenchFailover: while this process publishes 100 orders every 50 ms
// (about 2000 events/s over the 4 partitions; a publish that fails is
// sent again, the ids make it count once), each trial kills (SIGKILL) what
// one partition depends on and measures from the kill until that
// partition's speed position moves past where it stood: the `braid speed`
// process holding its lease (the survivor takes the partition once the
// lease expires, defaults.LeaseTTL), the nats-server leading its stream
// (the stream elects a leader among the other two; publishes and the
// consumer move to it) and the Redis master of its slot (its replica takes
// the slot over after cluster-node-timeout; commits go there). After each
// trial the killed one starts again, and the next trial waits until both
// speed processes hold two partitions each and every partition moves.
func TestBenchFailover(t *testing.T) {
	benchOnly(t)
	trials := envInt(t, "BRAID_BENCH_FAILOVER_TRIALS", 5)
	b := newFailoverBed(t)
	stop := b.ingest()
	defer stop()
	nodeTimeout := b.redisNodeTimeout()

	kinds := []struct {
		name, what, recovery string
		limit                time.Duration // the floor the mechanism sets (0: none stated)
		kill                 func(p int) fault
	}{
		{"speed_kill", "the braid speed process holding the partition", "the survivor held its lease", defaults.LeaseTTL, b.killSpeed},
		{"nats_leader_kill", "the nats-server leading the partition's stream", "the stream had a new leader", 0, b.killNATSLeader},
		{"redis_master_kill", "the Redis master of the partition's slot", "its replica served the slot", nodeTimeout, b.killRedisMaster},
	}
	var summary []string
	for _, k := range kinds {
		var ds, rs []float64
		for trial := range trials {
			b.settle()
			p := trial % scalePartitions
			f, moved, recovered := b.trial(p, k.kill)
			t.Logf("%s trial %d: killed %s; %s %.2fs later, partition %d moved %.2fs later", k.name, trial, f.what, k.recovery, recovered.Seconds(), p, moved.Seconds())
			ds = append(ds, moved.Seconds()*1000)
			rs = append(rs, recovered.Seconds()*1000)
			f.repair()
		}
		sort.Float64s(ds)
		sort.Float64s(rs)
		p50, worst := percentile(ds, 0.5), ds[len(ds)-1]
		report(t, "failover_"+k.name+"_p50", p50, "ms", float64(k.limit.Milliseconds()))
		report(t, "failover_"+k.name+"_max", worst, "ms", float64(k.limit.Milliseconds()))
		floor := ""
		if k.limit > 0 {
			floor = fmt.Sprintf(", floor %.1f s", k.limit.Seconds())
		}
		summary = append(summary, fmt.Sprintf("%s: p50 %.2f s, max %.2f s%s (%s after p50 %.2f s)", k.what, p50/1000, worst/1000, floor, k.recovery, percentile(rs, 0.5)/1000))
	}
	fmt.Printf("bench: failover kill -9 → the partition's speed position moves again, %d trials each, under 2000 events/s (aim <= 5 s): %s\n", trials, strings.Join(summary, "; "))
}

// fault is what a kill broke: what it was, how to repair it, and whether
// the part that took over is in place (polled while the test waits for
// the partition to move).
type fault struct {
	what      string
	repair    func()
	recovered func() bool
}

// newFailoverBed starts the servers and the two speed processes (it does
// not wait for them: the first settle does).
func newFailoverBed(t *testing.T) *failoverBed {
	t.Helper()
	b := &failoverBed{t: t}
	b.nats = testenv.StartNATSCluster(t, 3)
	b.redis = testenv.StartRedisCluster(t)
	b.st = testenv.NewStack(t, scaleCatalog(scalePartitions).YAML(), testenv.WithNATSCluster(b.nats), testenv.WithRedisCluster(b.redis))
	_, b.js = b.nats.Conn(t)
	var cat *config.Catalog
	b.log, _, cat = openStackLog(t, b.st, b.js)
	b.s = cat.Streams["orders"]
	b.rdb = b.redis.Client(t)
	b.store = speedstore.New(b.rdb, b.st.Namespace)
	for i := range b.speed {
		b.speed[i] = b.st.Spawn("speed")
	}
	return b
}

// ingest publishes 100 orders (event times now) every 50 ms until the
// returned function is called; a publish that fails is sent again.
func (b *failoverBed) ingest() (stop func()) {
	s := b.s
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i += 100 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now().UnixMilli()
			for ctx.Err() == nil {
				recs := make([]eventlog.Record, 100)
				for j := range recs {
					var err error
					if recs[j], err = orderRecord(s, i+j, now); err != nil {
						b.t.Error(err)
						return
					}
				}
				if err := b.log.Publish(ctx, s.Name, recs); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// position is partition p's speed position (ok false while Redis does
// not answer).
func (b *failoverBed) position(p int) (uint64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pos, _, err := b.store.Position(ctx, "orders", p)
	return pos.Seq, err == nil
}

// trial kills what partition p depends on and returns how long after the
// kill p's position moved past where it stood just before, and how long
// until the fault's recovered said so (polled every 100 ms meanwhile).
func (b *failoverBed) trial(p int, kill func(p int) fault) (f fault, moved, recovered time.Duration) {
	b.t.Helper()
	seq0, ok := b.position(p)
	if !ok {
		b.t.Fatalf("partition %d: no position before the kill", p)
	}
	t0 := time.Now()
	f = kill(p)
	var probed time.Time
	for {
		if recovered == 0 && time.Since(probed) >= 100*time.Millisecond {
			probed = time.Now()
			if f.recovered() {
				recovered = time.Since(t0)
			}
		}
		if moved == 0 {
			if seq, ok := b.position(p); ok && seq > seq0 {
				moved = time.Since(t0)
			}
		}
		if moved > 0 && recovered > 0 {
			return f, moved, recovered
		}
		if time.Since(t0) > 2*time.Minute {
			b.t.Fatalf("partition %d: 2 minutes after killing %s the position is still at %d or below (recovered: %v)\n%s\n%s", p, f.what, seq0, recovered > 0, b.speed[0].Output(), b.speed[1].Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pidOf is the process id in a lease owner's name (host-pid-suffix).
func pidOf(owner string) int {
	f := strings.Split(owner, "-")
	if len(f) < 3 {
		return 0
	}
	pid, _ := strconv.Atoi(f[len(f)-2])
	return pid
}

// owners maps each partition to the index in b.speed of the process
// holding its speed lease (-1: none, or a process no longer running).
func (b *failoverBed) owners() ([]int, error) {
	parts := make([]leases.Partition, scalePartitions)
	for p := range parts {
		parts[p] = leases.Partition{Stream: "orders", P: p}
	}
	held, err := leases.Owners(context.Background(), b.rdb, b.st.Namespace, "speed", parts)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(parts))
	for p, part := range parts {
		out[p] = -1
		for i, s := range b.speed {
			if pidOf(held[part]) == s.Cmd.Process.Pid {
				out[p] = i
			}
		}
	}
	return out, nil
}

// settle waits until each speed process holds two partitions and every
// partition's position moves.
func (b *failoverBed) settle() {
	b.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		own, err := b.owners()
		held := [2]int{}
		for _, i := range own {
			if i >= 0 {
				held[i]++
			}
		}
		if err == nil && held[0] == scalePartitions/2 && held[1] == scalePartitions/2 {
			break
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the speed processes do not share the partitions two and two after 2 minutes: %v %v", own, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	seqs := make([]uint64, scalePartitions)
	for p := range seqs {
		seqs[p], _ = b.position(p)
	}
	for p := range seqs {
		for {
			if seq, ok := b.position(p); ok && seq > seqs[p] {
				break
			}
			if time.Now().After(deadline) {
				b.t.Fatalf("partition %d does not move (position %d)", p, seqs[p])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// killSpeed kills the speed process holding p's lease; it has recovered
// once the other holds the lease; repairing starts another in its place.
func (b *failoverBed) killSpeed(p int) fault {
	own, err := b.owners()
	if err != nil || own[p] < 0 {
		b.t.Fatalf("partition %d: no live owner (%v, %v)", p, own, err)
	}
	i := own[p]
	b.speed[i].Kill(b.t)
	return fault{what: fmt.Sprintf("braid speed %d", i),
		repair: func() { b.speed[i] = b.st.Spawn("speed") },
		recovered: func() bool {
			own, err := b.owners()
			return err == nil && own[p] == 1-i
		}}
}

// killNATSLeader kills the nats-server leading p's stream; it has
// recovered once the stream has another leader; repairing starts the
// server again and waits until every replica of the partitions' streams
// is current.
func (b *failoverBed) killNATSLeader(p int) fault {
	name := b.log.StreamName("orders", p)
	i := b.nats.StreamLeader(b.t, name)
	old := b.streamLeader(name)
	b.nats.Kill(i)
	return fault{what: fmt.Sprintf("nats-server %d, leader of %s", i, name),
		repair: func() {
			b.nats.Restart(b.t, i)
			b.natsCurrent()
		},
		recovered: func() bool {
			leader := b.streamLeader(name)
			return leader != "" && leader != old
		}}
}

// streamLeader names the server leading a stream ("" when it has none or
// does not answer within half a second).
func (b *failoverBed) streamLeader(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// natsCurrent waits until each partition's stream has a leader and both
// of its other replicas are current.
func (b *failoverBed) natsCurrent() {
	b.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for p := range scalePartitions {
		name := b.log.StreamName("orders", p)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			why := ""
			s, err := b.js.Stream(ctx, name)
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = s.Info(ctx)
			}
			cancel()
			switch {
			case err != nil:
				why = err.Error()
			case info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2:
				why = fmt.Sprintf("cluster %+v", info.Cluster)
			default:
				for _, r := range info.Cluster.Replicas {
					if !r.Current || r.Offline {
						why = fmt.Sprintf("replica %s current %v offline %v", r.Name, r.Current, r.Offline)
					}
				}
			}
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				b.t.Fatalf("stream %s not whole again after 2 minutes: %s", name, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// killRedisMaster kills the Redis master of p's slot; it has recovered
// once the cluster names another master of the slot; repairing starts it
// again (it rejoins as a replica) and waits until the cluster is healthy.
func (b *failoverBed) killRedisMaster(p int) fault {
	key := b.st.Namespace + ":pos:" + speedstore.Tag("orders", p)
	i := b.redis.MasterOf(b.t, key)
	b.redis.Kill(i)
	return fault{what: fmt.Sprintf("redis-server %d, master of %s", i, key),
		repair:    func() { b.redis.Restart(b.t, i) },
		recovered: func() bool { return b.redis.MasterOf(b.t, key) != i }}
}

// redisNodeTimeout is the cluster's cluster-node-timeout, as a node says.
func (b *failoverBed) redisNodeTimeout() time.Duration {
	b.t.Helper()
	v, err := b.rdb.ConfigGet(context.Background(), "cluster-node-timeout").Result()
	if err != nil {
		b.t.Fatal(err)
	}
	ms, err := strconv.Atoi(v["cluster-node-timeout"])
	if err != nil {
		b.t.Fatalf("cluster-node-timeout %v: %v", v, err)
	}
	return time.Duration(ms) * time.Millisecond
}
