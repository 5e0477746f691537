package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// partOf spreads the test's ids over n partitions (any fixed choice will
// do: the log keeps an event in the partition it is given).
func partOf(id string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// clusterWriters is a test's publishers: clients sending batches of
// events with ids to two writers (two processes' logs), each retrying a
// failed batch, on the other writer, until it is stored.
type clusterWriters struct {
	logs  [2]*eventlog.Log
	parts int

	mu       sync.Mutex
	acked    map[string]bool
	lastOK   [2]time.Time // when the last successful publish of each writer began
	failures [2]int
	odd      error // a publish error other than ErrUnavailable
	stop     atomic.Bool
	wg       sync.WaitGroup
}

// run starts n clients; each sends batches of size events until stop,
// finishing (retrying until stored) the batch it is sending.
func (w *clusterWriters) run(n, size int) {
	for c := range n {
		w.wg.Go(func() {
			attempt := c
			for b := 0; !w.stop.Load(); b++ {
				ids := make([]string, size)
				for i := range ids {
					ids[i] = fmt.Sprintf("c%d-%d-%d", c, b, i)
				}
				for {
					k := attempt % 2
					attempt++
					recs := make([]eventlog.Record, len(ids))
					for i, id := range ids {
						recs[i] = eventlog.Record{ID: id, Data: fmt.Appendf(nil, `{"id":%q}`, id), Part: partOf(id, w.parts)}
					}
					began := time.Now()
					err := w.logs[k].Publish(context.Background(), "orders", recs)
					w.mu.Lock()
					if err == nil {
						w.lastOK[k] = began
						for _, id := range ids {
							w.acked[id] = true
						}
					} else {
						w.failures[k]++
					}
					w.mu.Unlock()
					if err == nil {
						break
					}
					if !errors.Is(err, eventlog.ErrUnavailable) {
						w.mu.Lock()
						w.odd = err
						w.mu.Unlock()
						w.stop.Store(true)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
}

// okSince reports whether a successful publish of writer k began after t.
func (w *clusterWriters) okSince(k int, t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastOK[k], w.lastOK[k].After(t)
}

// TestClusterFailover: a stream of 4 partitions, R3 on a 3-node cluster,
// written by two processes while the leader of a partition's JetStream
// stream is killed with SIGKILL and later restarted. Both writers publish
// again within seconds of the kill, and afterwards every acknowledged id
// is in the log exactly once, in its partition, whose sequences are
// contiguous; EventCount counts them.
func TestClusterFailover(t *testing.T) {
	ctx := context.Background()
	c := testenv.StartNATSCluster(t, 3)
	ns := testenv.Namespace(t)
	const parts = 4
	w := &clusterWriters{parts: parts, acked: map[string]bool{}}
	for k := range w.logs {
		_, js := c.Conn(t)
		l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: ns, Replicas: 3, DedupWindow: time.Minute,
			PublishTimeout: 2 * time.Second, Partitions: map[string]int{"orders": parts}, Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		w.logs[k] = l
	}
	w.run(4, 40)
	time.Sleep(2 * time.Second)
	leaders := make([]int, parts)
	for p := range leaders {
		leaders[p] = c.StreamLeader(t, w.logs[0].StreamName("orders", p))
	}
	victim := leaders[1]
	killed := time.Now()
	c.Kill(victim)
	t.Logf("killed node %d, the leader of partition 1 (the partitions' leaders: %v)", victim, leaders)
	for k := range w.logs {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if at, ok := w.okSince(k, killed); ok {
				t.Logf("writer %d published again: a publish begun %v after the kill succeeded", k, at.Sub(killed).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				w.stop.Store(true)
				w.mu.Lock()
				defer w.mu.Unlock()
				t.Fatalf("writer %d has not published since the kill, 60s ago (failures %v, %v)", k, w.failures, w.odd)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	c.Restart(t, victim)
	restarted := time.Now()
	for k := range w.logs {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, ok := w.okSince(k, restarted.Add(time.Second)); ok {
				break
			}
			if time.Now().After(deadline) {
				w.stop.Store(true)
				t.Fatalf("writer %d has not published since the restart, 60s ago", k)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	w.stop.Store(true)
	w.wg.Wait()
	if w.odd != nil {
		t.Fatalf("a publish failed with %v, want only eventlog.ErrUnavailable", w.odd)
	}
	t.Logf("%d ids acknowledged; failed publishes per writer %v", len(w.acked), w.failures)

	_, js := c.Conn(t)
	seen := map[string]int{}
	for p := range parts {
		name := w.logs[0].StreamName("orders", p)
		for _, data := range testenv.StoredMessages(t, js, name) { // fails on a gap in the sequences
			if err := eventlog.Unpack(data, func(_ int, id, _ []byte) error {
				seen[string(id)]++
				if partOf(string(id), parts) != p {
					t.Errorf("id %s in partition %d, want %d", id, p, partOf(string(id), parts))
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	lost, doubled, extra := 0, 0, 0
	for id := range w.acked {
		switch n := seen[id]; {
		case n == 0:
			lost++
		case n > 1:
			doubled++
		}
	}
	for id := range seen {
		if !w.acked[id] {
			extra++
		}
	}
	if lost+doubled+extra > 0 || len(w.acked) == 0 {
		t.Fatalf("%d ids acknowledged: %d lost, %d stored more than once, %d stored but never acknowledged", len(w.acked), lost, doubled, extra)
	}
	waitUntil(t, "EventCount to count every event once", func() string {
		n, err := w.logs[1].EventCount(ctx, "orders")
		if err != nil || n != uint64(len(w.acked)) {
			return fmt.Sprintf("EventCount %d, %v; want %d", n, err, len(w.acked))
		}
		return ""
	})
}
