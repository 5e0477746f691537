package leases_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/tests/testenv"
)

// parts are the 8 partitions the tests share out: two streams.
var parts = func() []leases.Partition {
	var ps []leases.Partition
	for p := range 5 {
		ps = append(ps, leases.Partition{Stream: "orders", P: p})
	}
	for p := range 3 {
		ps = append(ps, leases.Partition{Stream: "clicks", P: p})
	}
	return ps
}()

// expected is the share the package comment describes, computed here on
// its own: partitions by stream then number, each to the member with the
// highest FNV-1a of member/stream.p (ties: the lower name) among those
// holding fewer than ceil(partitions/members).
func expected(members []string, ps []leases.Partition) map[leases.Partition]string {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b leases.Partition) int {
		return cmp.Or(cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.P, b.P))
	})
	limit := (len(ps) + len(members) - 1) / len(members)
	load := map[string]int{}
	out := map[leases.Partition]string{}
	for _, p := range ps {
		best, bestScore := "", uint64(0)
		for _, m := range members {
			if load[m] >= limit {
				continue
			}
			h := fnv.New64a()
			h.Write([]byte(m + "/" + p.Stream + "." + strconv.Itoa(p.P)))
			if s := h.Sum64(); best == "" || s > bestScore || (s == bestScore && m < best) {
				best, bestScore = m, s
			}
		}
		out[p] = best
		load[best]++
	}
	return out
}

// tracker records which members run a work on each partition.
type tracker struct {
	mu       sync.Mutex
	running  map[leases.Partition][]string
	starts   map[leases.Partition]int
	overlaps []string // partitions seen worked on by two members at once
}

func newTracker() *tracker {
	return &tracker{running: map[leases.Partition][]string{}, starts: map[leases.Partition]int{}}
}

// work is a member's work: it runs until its context ends; fail returns
// an error at once the first times it is asked (per partition).
func (tr *tracker) work(owner string, fail map[leases.Partition]int) func(context.Context, leases.Partition) error {
	return func(ctx context.Context, p leases.Partition) error {
		tr.mu.Lock()
		tr.starts[p]++
		if fail[p] > 0 {
			fail[p]--
			tr.mu.Unlock()
			return errors.New("failing on purpose")
		}
		tr.running[p] = append(tr.running[p], owner)
		if len(tr.running[p]) > 1 {
			tr.overlaps = append(tr.overlaps, fmt.Sprint(p, tr.running[p]))
		}
		tr.mu.Unlock()
		<-ctx.Done()
		tr.mu.Lock()
		i := slices.Index(tr.running[p], owner)
		tr.running[p] = slices.Delete(tr.running[p], i, i+1)
		tr.mu.Unlock()
		return nil
	}
}

// member is one process's group over a client of its own.
type member struct {
	name   string
	rdb    redis.UniversalClient
	cancel context.CancelFunc
	done   chan error
}

func startMember(t *testing.T, r *testenv.Redis, ns, name string, tr *tracker, fail map[leases.Partition]int) *member {
	t.Helper()
	return startMemberOn(t, redis.NewClient(&redis.Options{Addr: r.Addr}), ns, name, tr, fail)
}

// startMemberOn starts a member over a client of its own (closed with it).
func startMemberOn(t *testing.T, rdb redis.UniversalClient, ns, name string, tr *tracker, fail map[leases.Partition]int) *member {
	t.Helper()
	m := &member{name: name, rdb: rdb, done: make(chan error, 1)}
	g := leases.New(m.rdb, leases.Options{Namespace: ns, Role: "speed", Owner: name, Logger: testenv.Logger(t)})
	if g.Owner() != name {
		t.Fatalf("owner %q, want %q", g.Owner(), name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- g.Run(ctx, parts, tr.work(name, fail)) }()
	t.Cleanup(func() { m.stop(t); _ = m.rdb.Close() })
	return m
}

// stop ends the member's Run (idempotent).
func (m *member) stop(t *testing.T) {
	t.Helper()
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("Run of %s: %v", m.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("Run of %s did not return 30s after its context ended", m.name)
	}
}

// kill stops the member as a SIGKILL would as far as Redis sees it: its
// connection goes first, so nothing is released and nothing left.
func (m *member) kill(t *testing.T) {
	_ = m.rdb.Close()
	m.stop(t)
}

// state returns "" when the leases (read by a client of the test) and the
// works running are exactly want, else what differs.
func state(ctx context.Context, rdb redis.UniversalClient, ns string, tr *tracker, want map[leases.Partition]string) string {
	owners, err := leases.Owners(ctx, rdb, ns, "speed", parts)
	if err != nil {
		return err.Error()
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, p := range parts {
		if owners[p] != want[p] {
			return fmt.Sprintf("%s: lease held by %q, want %q", p, owners[p], want[p])
		}
		if want[p] == "" && len(tr.running[p]) == 0 {
			continue
		}
		if !slices.Equal(tr.running[p], []string{want[p]}) {
			return fmt.Sprintf("%s: worked on by %v, want %q", p, tr.running[p], want[p])
		}
	}
	return ""
}

func eventually(t *testing.T, what string, f func() string) time.Duration {
	t.Helper()
	t0 := time.Now()
	var last string
	for time.Since(t0) < 60*time.Second {
		if last = f(); last == "" {
			return time.Since(t0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %s", what, last)
	return 0
}

func loads(want map[leases.Partition]string) map[string]int {
	n := map[string]int{}
	for _, m := range want {
		n[m]++
	}
	return n
}

// TestSharesBalancedAndHandedOver: two members share 8 partitions 4:4 as
// computed independently; a third joining takes its share (3:3:2) from
// them; one leaving hands its partitions over. No partition is ever
// worked on by two members at once when nobody dies.
func TestSharesBalancedAndHandedOver(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	ns := testenv.Namespace(t)
	rdb := r.Client(t)
	tr := newTracker()

	nobody, err := leases.Owners(ctx, rdb, ns, "speed", parts)
	if err != nil || len(nobody) != len(parts) || slices.ContainsFunc(parts, func(p leases.Partition) bool { return nobody[p] != "" }) {
		t.Fatalf("owners before any member: %v %v, want every partition with nobody", nobody, err)
	}

	a := startMember(t, r, ns, "speed-a", tr, nil)
	b := startMember(t, r, ns, "speed-b", tr, nil)
	want := expected([]string{"speed-a", "speed-b"}, parts)
	if n := loads(want); n["speed-a"] != 4 || n["speed-b"] != 4 {
		t.Fatalf("expected shares %v, want 4:4", n)
	}
	eventually(t, "two members", func() string { return state(ctx, rdb, ns, tr, want) })

	c := startMember(t, r, ns, "speed-c", tr, nil)
	want = expected([]string{"speed-a", "speed-b", "speed-c"}, parts)
	n := loads(want)
	if s := []int{n["speed-a"], n["speed-b"], n["speed-c"]}; slices.Max(s)-slices.Min(s) > 1 {
		t.Fatalf("expected shares %v, want them within one of each other", n)
	}
	eventually(t, "a third member joined", func() string { return state(ctx, rdb, ns, tr, want) })

	a.stop(t)
	want = expected([]string{"speed-b", "speed-c"}, parts)
	took := eventually(t, "a member left", func() string { return state(ctx, rdb, ns, tr, want) })
	t.Logf("partitions of the member that left taken over in %s", took)

	b.stop(t)
	c.stop(t)
	eventually(t, "every member left", func() string { return state(ctx, rdb, ns, tr, map[leases.Partition]string{}) })
	if members, err := rdb.ZRange(ctx, ns+":members:speed", 0, -1).Result(); err != nil || len(members) != 0 {
		t.Fatalf("members after every one left: %v %v", members, err)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.overlaps) > 0 {
		t.Fatalf("partitions worked on by two members at once: %v", tr.overlaps)
	}
}

// TestKilledMemberPartitionsMove: a member that vanishes without a goodbye
// loses its membership and leases within the TTL; the survivors take its
// partitions; when it comes back it gets its share again.
func TestKilledMemberPartitionsMove(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	ns := testenv.Namespace(t)
	rdb := r.Client(t)
	tr := newTracker()
	all := []string{"speed-a", "speed-b", "speed-c"}
	startMember(t, r, ns, "speed-a", tr, nil)
	startMember(t, r, ns, "speed-b", tr, nil)
	c := startMember(t, r, ns, "speed-c", tr, nil)
	want := expected(all, parts)
	eventually(t, "three members", func() string { return state(ctx, rdb, ns, tr, want) })

	c.kill(t)
	want = expected(all[:2], parts)
	took := eventually(t, "survivors own everything", func() string { return state(ctx, rdb, ns, tr, want) })
	t.Logf("partitions of the killed member taken over %s after the kill (TTL 3s)", took)

	startMember(t, r, ns, "speed-c", tr, nil)
	want = expected(all, parts)
	eventually(t, "the returning member has its share", func() string { return state(ctx, rdb, ns, tr, want) })
}

// TestFailedWorkPausesThenResumes: a work that fails gives its partition
// up for a pause; the member takes it again (it is still its share).
func TestFailedWorkPausesThenResumes(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	ns := testenv.Namespace(t)
	rdb := r.Client(t)
	tr := newTracker()
	p := parts[2]
	startMember(t, r, ns, "speed-a", tr, map[leases.Partition]int{p: 2})
	want := expected([]string{"speed-a"}, parts)
	eventually(t, "one member with every partition", func() string { return state(ctx, rdb, ns, tr, want) })
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.starts[p] != 3 || tr.starts[parts[0]] != 1 {
		t.Fatalf("works started on %s: %d, on %s: %d; want 3 (two failures) and 1", p, tr.starts[p], parts[0], tr.starts[parts[0]])
	}
}

// TestSharesOnRedisCluster: the same sharing on a Redis Cluster, where
// each partition's lease lives in its partition's slot: two members
// share, a killed one's partitions move to the survivor, and it gets its
// share back when it returns.
func TestSharesOnRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a six-node Redis Cluster; skipped with -short")
	}
	ctx := context.Background()
	rc := testenv.StartRedisCluster(t)
	ns := testenv.Namespace(t)
	rdb := rc.Client(t)
	tr := newTracker()
	all := []string{"speed-a", "speed-b"}
	startMemberOn(t, rc.Client(t), ns, "speed-a", tr, nil)
	b := startMemberOn(t, rc.Client(t), ns, "speed-b", tr, nil)
	want := expected(all, parts)
	eventually(t, "two members on the cluster", func() string { return state(ctx, rdb, ns, tr, want) })

	b.kill(t)
	want = expected(all[:1], parts)
	took := eventually(t, "the survivor owns everything", func() string { return state(ctx, rdb, ns, tr, want) })
	t.Logf("partitions of the killed member taken over %s after the kill", took)

	startMemberOn(t, rc.Client(t), ns, "speed-b", tr, nil)
	want = expected(all, parts)
	eventually(t, "the returning member has its share", func() string { return state(ctx, rdb, ns, tr, want) })
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.overlaps) > 0 {
		t.Fatalf("partitions worked on by two members at once: %v", tr.overlaps)
	}
}

// TestWorkOutlivesAShortRedisOutage: Redis gone for about two seconds
// (killed, then started again empty, as a failover to a replica that had
// not seen the last writes would leave it) does not stop a member's works:
// it takes its leases again and no partition is started twice. Without
// Redis for longer than three lease lifetimes it gives them up.
func TestWorkOutlivesAShortRedisOutage(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	ns := testenv.Namespace(t)
	tr := newTracker()
	startMember(t, r, ns, "speed-a", tr, nil)
	want := expected([]string{"speed-a"}, parts)
	eventually(t, "one member", func() string { return state(ctx, r.Client(t), ns, tr, want) })

	r.Stop()
	time.Sleep(2 * time.Second)
	r.Restart(t)
	eventually(t, "the leases taken again", func() string { return state(ctx, r.Client(t), ns, tr, want) })
	tr.mu.Lock()
	for _, p := range parts {
		if tr.starts[p] != 1 {
			t.Errorf("partition %s started %d times, want once: its work stopped during the outage", p, tr.starts[p])
		}
	}
	tr.mu.Unlock()

	r.Stop()
	eventually(t, "the works given up without Redis", func() string {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for p, owners := range tr.running {
			if len(owners) > 0 {
				return fmt.Sprintf("%s still worked on by %v", p, owners)
			}
		}
		return ""
	})
}
