package storagetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/eventlog"
)

// LogWriter appends clean events to a stream's log: what ingest (HTTP and
// the raw NATS subject) uses.
//
// Contract:
//   - Publish returns once every event of recs is stored, or with an error
//     (then some may be stored: the caller publishes them again). An event
//     whose id was stored within the dedup window, or repeats an id earlier
//     in recs, is dropped and counts as stored; an event without an id is
//     never dropped. Events are stored in the order given.
//   - Deduplication holds across writers: any number of writers, in one
//     process or several, concurrently, store an id once.
//   - A publish whose outcome the writer could not learn (a timeout, a
//     lost connection) is settled without doubling: publishing the events
//     again after an error stores each id once.
//   - The writer holds recs until their write is settled, which may be
//     after Publish returned an error: the caller does not reuse them.
//   - Safe for concurrent use.
type LogWriter interface {
	Publish(ctx context.Context, stream string, recs []eventlog.Record) error
}

// LogEnv is a fresh log with stream "orders" and a dedup window of at
// least a minute.
type LogEnv struct {
	// Open opens a writer on the log (each call: another process's, with
	// its own connection).
	Open func() LogWriter
	// Stored returns every event the stream's log holds, in log order.
	Stored func(stream string) []eventlog.Record
	// Interrupt cuts every writer off the log for a moment (a server
	// restart, a failover), so that publishes in flight get an unknown
	// outcome, and returns once the log is back.
	Interrupt func()
}

// NewLog makes a fresh log.
type NewLog func(t *testing.T) LogEnv

// RunLogWriter runs the event log writer suite.
func RunLogWriter(t *testing.T, newLog NewLog) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, LogEnv)
	}{
		{"DedupInOrder", logDedupInOrder},
		{"DedupAcrossWriters", logDedupAcrossWriters},
		{"UnknownOutcomes", logUnknownOutcomes},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newLog(t)) })
	}
}

// KeepFirst is the oracle: the events a log with dedup by id holds after
// writes, in order, as "id|data" (no-id events all kept, an id only its
// first time).
func KeepFirst(writes ...[]eventlog.Record) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range writes {
		for _, r := range w {
			if r.ID != "" {
				if seen[r.ID] {
					continue
				}
				seen[r.ID] = true
			}
			out = append(out, r.ID+"|"+string(r.Data))
		}
	}
	return out
}

// RandomWrite makes a write of n events with random data, three in four
// with one of ids ids (id-0 to id-<ids-1>), the others without one.
func RandomWrite(rng *rand.Rand, n, ids int) []eventlog.Record {
	recs := make([]eventlog.Record, n)
	for i := range recs {
		recs[i].Data = fmt.Appendf(nil, `{"n":%d}`, rng.IntN(1_000_000))
		if rng.IntN(4) > 0 {
			recs[i].ID = fmt.Sprintf("id-%d", rng.IntN(ids))
		}
	}
	return recs
}

func cloneRecords(recs []eventlog.Record) []eventlog.Record {
	out := make([]eventlog.Record, len(recs))
	for i, r := range recs {
		out[i] = eventlog.Record{ID: r.ID, Data: slices.Clone(r.Data)}
	}
	return out
}

func storedStrings(env LogEnv) []string {
	var out []string
	for _, r := range env.Stored("orders") {
		out = append(out, r.ID+"|"+string(r.Data))
	}
	return out
}

func logDedupInOrder(t *testing.T, env LogEnv) {
	ctx := context.Background()
	w := env.Open()
	rng := rand.New(rand.NewPCG(3, 4))
	w1, w2 := RandomWrite(rng, 1000, 600), RandomWrite(rng, 1000, 1200)
	for _, recs := range [][]eventlog.Record{w1, w2, w1} {
		if err := w.Publish(ctx, "orders", cloneRecords(recs)); err != nil {
			t.Fatal(err)
		}
	}
	// A restarted process knows the ids stored within the window.
	if err := env.Open().Publish(ctx, "orders", cloneRecords(w2)); err != nil {
		t.Fatal(err)
	}
	got, want := storedStrings(env), KeepFirst(w1, w2, w1, w2)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log holds %d events, want %d (first occurrence of each id, every event without one, in order)", len(got), len(want))
	}
}

// logDedupAcrossWriters: two processes' writers (two connections) and
// concurrent callers in each write overlapping ids at once; every id is
// stored once and every event without an id exactly once.
func logDedupAcrossWriters(t *testing.T, env LogEnv) {
	ctx := context.Background()
	writers := []LogWriter{env.Open(), env.Open()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[string]bool{}
	noID := map[string]int{}
	for g := range 8 {
		rng := rand.New(rand.NewPCG(uint64(g), 9))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 20 {
				w := RandomWrite(rng, 50, 400)
				for i := range w {
					if w[i].ID == "" {
						w[i].Data = fmt.Appendf(nil, `{"g":%d,"k":%d,"i":%d}`, g, k, i) // unique
					}
				}
				if err := writers[g%2].Publish(ctx, "orders", cloneRecords(w)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, r := range w {
					if r.ID != "" {
						ids[r.ID] = true
					} else {
						noID[string(r.Data)]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkOnce(t, env, ids, noID)
}

// checkOnce checks the log holds every id of ids once and every event
// without an id of noID exactly once, and nothing else.
func checkOnce(t *testing.T, env LogEnv, ids map[string]bool, noID map[string]int) {
	t.Helper()
	gotIDs := map[string]int{}
	gotNoID := map[string]int{}
	for _, r := range env.Stored("orders") {
		if r.ID != "" {
			gotIDs[r.ID]++
		} else {
			gotNoID[string(r.Data)]++
		}
	}
	for id, c := range gotIDs {
		if c != 1 || !ids[id] {
			t.Fatalf("id %s stored %d times (written: %v)", id, c, ids[id])
		}
	}
	if len(gotIDs) != len(ids) || len(gotNoID) != len(noID) {
		t.Fatalf("stored %d ids and %d events without one; written %d and %d", len(gotIDs), len(gotNoID), len(ids), len(noID))
	}
	for d, c := range gotNoID {
		if c != 1 {
			t.Fatalf("event %s stored %d times", d, c)
		}
	}
}

// logUnknownOutcomes: writers publish while the log is interrupted twice;
// a publish that fails (its outcome unknown to the caller) is published
// again until it succeeds, as ingest's clients do. Every id ends up
// stored exactly once.
func logUnknownOutcomes(t *testing.T, env LogEnv) {
	ctx := context.Background()
	writers := []LogWriter{env.Open(), env.Open()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[string]bool{}
	failed := 0
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				w := make([]eventlog.Record, 20)
				for i := range w {
					w[i] = eventlog.Record{ID: fmt.Sprintf("g%d-k%d-i%d", g, k, i), Data: fmt.Appendf(nil, `{"g":%d,"k":%d,"i":%d}`, g, k, i)}
				}
				deadline := time.Now().Add(2 * time.Minute)
				for {
					err := writers[g%2].Publish(ctx, "orders", cloneRecords(w))
					if err == nil {
						break
					}
					mu.Lock()
					failed++
					mu.Unlock()
					if time.Now().After(deadline) {
						t.Errorf("writer %d: a write failed for two minutes: %v", g, err)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				mu.Lock()
				for _, r := range w {
					ids[r.ID] = true
				}
				mu.Unlock()
			}
		}()
	}
	for range 2 {
		time.Sleep(300 * time.Millisecond)
		env.Interrupt()
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	checkOnce(t, env, ids, map[string]int{})
	t.Logf("%d ids stored; %d publishes failed and were repeated", len(ids), failed)
}
