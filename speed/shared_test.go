package speed_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// process is one speed "process": its own NATS connection, Redis client,
// group membership and layer.
type process struct {
	name   string
	rdb    *redis.Client
	closeN func()
	layer  *speed.Layer
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startProcess(t *testing.T, name string) *process {
	t.Helper()
	nc, js := e.nats.JetStream(t)
	log, err := eventlog.Open(context.Background(), js, e.cat.StreamOrder, eventlog.Options{Namespace: e.ns, DedupWindow: time.Minute,
		Partitions: map[string]int{"orders": e.cat.Streams["orders"].Partitions}})
	if err != nil {
		t.Fatal(err)
	}
	pr := &process{name: name, rdb: redis.NewClient(&redis.Options{Addr: e.redis.Addr}), closeN: nc.Close, done: make(chan error, 1)}
	logger := testenv.Logger(t).With("process", name)
	g := leases.New(pr.rdb, leases.Options{Namespace: e.ns, Role: "speed", Owner: name, Logger: logger})
	pr.layer = speed.New(speed.Config{BatchSize: 100, MaxWait: 50 * time.Millisecond, Epoch: time.Second, MaxCells: 500}, log,
		speedstore.New(pr.rdb, e.ns), zero{}, g, e.cat, logger, nil)
	ctx, cancel := context.WithCancel(context.Background())
	pr.cancel = cancel
	go func() { pr.done <- pr.layer.Run(ctx) }()
	t.Cleanup(func() { pr.stop(t); _ = pr.rdb.Close() })
	return pr
}

// stop ends the process's layer gracefully (idempotent).
func (pr *process) stop(t *testing.T) {
	if pr.cancel == nil {
		return
	}
	pr.cancel()
	pr.cancel = nil
	select {
	case err := <-pr.done:
		if err != nil {
			t.Errorf("%s: Run: %v", pr.name, err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("%s: Run did not return 60s after its context ended", pr.name)
	}
}

// kill ends the process as SIGKILL would for the servers: its Redis and
// NATS connections go first, so nothing in flight is committed or
// acknowledged and no lease is released.
func (pr *process) kill(t *testing.T) {
	_ = pr.rdb.Close()
	pr.closeN()
	pr.stop(t)
}

// running lists the partitions the process runs, and whether each has
// committed since it started.
func (pr *process) running() (parts []int, committed bool) {
	committed = true
	for _, p := range pr.layer.Status()["orders"].Partitions {
		if p.Owner == pr.name {
			parts = append(parts, p.Partition)
			committed = committed && !p.LastCommit.IsZero()
		}
	}
	return parts, committed && len(parts) > 0
}

// TestSharedPartitionsExactThroughAKill: two speed processes share a
// stream of 4 partitions (2 each) while events are ingested; one is
// killed mid-way; the other takes its partitions over. At the end every
// partition's position is at its last record and the cells equal a direct
// computation over the events sent: nothing lost, nothing doubled.
func TestSharedPartitionsExactThroughAKill(t *testing.T) {
	e := setupWith(t, strings.Replace(cfgYAML, "allowed_lateness: 1h", "allowed_lateness: 1h\n    partitions: 4", 1))
	ctx := context.Background()
	a := e.startProcess(t, "speed-a")
	b := e.startProcess(t, "speed-b")
	var mu sync.Mutex // publishing goes on while the test waits
	publish := func(n, dup int) { mu.Lock(); defer mu.Unlock(); e.publish(t, n, dup) }
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for {
			select {
			case <-stopPub:
				return
			case <-time.After(50 * time.Millisecond):
				publish(100, 5)
			}
		}
	}()
	eventually(t, "both processes run two partitions and commit", func() string {
		pa, ca := a.running()
		pb, cb := b.running()
		if len(pa) != 2 || len(pb) != 2 || !ca || !cb {
			return fmt.Sprintf("speed-a runs %v (committed %v), speed-b %v (%v)", pa, ca, pb, cb)
		}
		return ""
	})
	// Kill b while events keep coming.
	time.Sleep(300 * time.Millisecond)
	b.kill(t)
	t0 := time.Now()
	time.Sleep(time.Second)
	close(stopPub)
	<-pubDone
	publish(400, 20)

	eventually(t, "speed-a runs every partition", func() string {
		if pa, _ := a.running(); len(pa) != 4 {
			return fmt.Sprintf("speed-a runs %v", pa)
		}
		return ""
	})
	t.Logf("speed-a runs every partition %s after the kill", time.Since(t0).Round(time.Millisecond))
	eventually(t, "exact after the takeover", e.verify)
	owners, err := leases.Owners(ctx, e.redis.Client(t), e.ns, "speed", []leases.Partition{
		{Stream: "orders", P: 0}, {Stream: "orders", P: 1}, {Stream: "orders", P: 2}, {Stream: "orders", P: 3}})
	if err != nil {
		t.Fatal(err)
	}
	for p, o := range owners {
		if o != "speed-a" {
			t.Fatalf("lease of %v held by %q, want speed-a", p, o)
		}
	}
	for p := range 4 {
		if pos, _, err := e.store.Position(ctx, "orders", p); err != nil || pos.Owner != "speed-a" {
			t.Fatalf("partition %d: position %+v (%v), want the last commit by speed-a", p, pos, err)
		}
	}
	a.stop(t)
	if msg := e.verify(); msg != "" {
		t.Fatal(msg)
	}
}
