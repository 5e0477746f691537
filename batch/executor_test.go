package batch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/workqueue"
	"github.com/braid-data/braid/tests/testenv"
)

// fakeComputer computes a unit from its fields alone: a part keyed by
// the unit, as many rows as files, each file's rows the length of its
// key. View "refused" is refused, "broken" always fails, "hang" waits for
// its context.
type fakeComputer struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *fakeComputer) Compute(ctx context.Context, u batch.Unit) (batch.UnitResult, error) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[u.ID()]++
	c.mu.Unlock()
	switch u.View {
	case "refused":
		return batch.UnitResult{Err: "not my catalog"}, nil
	case "broken":
		return batch.UnitResult{}, errors.New("disk on fire")
	case "hang":
		<-ctx.Done()
		return batch.UnitResult{}, ctx.Err()
	}
	return fakeResult(u), nil
}

// fakeResult is what fakeComputer answers for u, stated independently.
func fakeResult(u batch.Unit) batch.UnitResult {
	res := batch.UnitResult{Part: batchviews.Part{Date: u.Date, Key: "part/" + u.ID(), Rows: len(u.Files), Run: u.Run, Cutoff: u.Cutoff}, FileRows: map[string]int64{}}
	for _, f := range u.Files {
		res.FileRows[f.Key] = int64(len(f.Key))
		res.RowsRead += int64(len(f.Key))
	}
	return res
}

func fakeUnits(run, view string, n int) []batch.Unit {
	out := make([]batch.Unit, n)
	for i := range out {
		d := time.Date(2024, 5, 1+i, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
		u := batch.Unit{Run: run, View: view, Definition: "def-" + view, Date: d, Cutoff: int64(1000 + i), Stream: "orders"}
		for j := 0; j <= i%3; j++ {
			u.Files = append(u.Files, lake.FileInfo{Key: fmt.Sprintf("orders/date=%s/%d.parquet", d, j), Date: d, Rows: int64(j + 1)})
		}
		out[i] = u
	}
	return out
}

// testExecutor holds an executor to UnitExecutor's contract.
func testExecutor(t *testing.T, newExec func(t *testing.T, c batch.UnitComputer) batch.UnitExecutor) {
	t.Run("results", func(t *testing.T) {
		c := &fakeComputer{}
		e := newExec(t, c)
		units := append(fakeUnits("run-1", "v", 12), fakeUnits("run-1", "refused", 1)...)
		units = append(units, fakeUnits("run-1", "broken", 2)...)
		var mu sync.Mutex
		got := map[string]batch.UnitResult{}
		err := e.Execute(context.Background(), units, func(r batch.UnitResult) {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := got[r.Unit.ID()]; dup {
				t.Errorf("second result for %s", r.Unit.ID())
			}
			got[r.Unit.ID()] = r
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(units) {
			t.Fatalf("%d results for %d units", len(got), len(units))
		}
		for _, u := range units {
			r := got[u.ID()]
			if r.Unit.ID() != u.ID() || r.Unit.Cutoff != u.Cutoff || len(r.Unit.Files) != len(u.Files) {
				t.Fatalf("result of %s carries unit %+v", u.ID(), r.Unit)
			}
			switch u.View {
			case "refused":
				if r.Err != "not my catalog" {
					t.Fatalf("refused unit: %+v", r)
				}
			case "broken":
				if r.Err == "" {
					t.Fatalf("broken unit without an error: %+v", r)
				}
			default:
				want := fakeResult(u)
				if r.Err != "" || r.Part != want.Part || r.RowsRead != want.RowsRead || fmt.Sprint(r.FileRows) != fmt.Sprint(want.FileRows) {
					t.Fatalf("unit %s: %+v, want %+v", u.ID(), r, want)
				}
			}
		}
		// Every unit that succeeded was computed, the refused one once.
		if c.calls[units[12].ID()] != 1 {
			t.Fatalf("refused unit computed %d times", c.calls[units[12].ID()])
		}
	})
	t.Run("empty", func(t *testing.T) {
		e := newExec(t, &fakeComputer{})
		if err := e.Execute(context.Background(), nil, func(batch.UnitResult) { t.Error("a result without units") }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		e := newExec(t, &fakeComputer{})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(300 * time.Millisecond) // not an assertion: the units are handed out or not
			cancel()
		}()
		err := e.Execute(ctx, fakeUnits("run-2", "hang", 3), func(r batch.UnitResult) {})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Execute: %v, want context.Canceled", err)
		}
	})
}

func TestPoolExecutor(t *testing.T) {
	testExecutor(t, func(t *testing.T, c batch.UnitComputer) batch.UnitExecutor { return batch.NewPool(3, c) })
}

func TestQueueExecutor(t *testing.T) {
	n := testenv.StartNATS(t)
	i := 0
	testExecutor(t, func(t *testing.T, c batch.UnitComputer) batch.UnitExecutor {
		i++
		ns := fmt.Sprintf("%s%d", testenv.Namespace(t), i)
		_, js := n.JetStream(t)
		q, err := workqueue.Open(context.Background(), js, workqueue.Options{Namespace: ns, MaxDeliver: 2, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		// Two workers, each on its own connection.
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2 {
			_, wjs := n.JetStream(t)
			wq, err := workqueue.Open(context.Background(), wjs, workqueue.Options{Namespace: ns, MaxDeliver: 2, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			w := batch.NewWorker(wq, c, 2, quietLogger())
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.Run(ctx); err != nil {
					t.Error(err)
				}
			}()
		}
		t.Cleanup(func() { cancel(); wg.Wait() })
		return batch.NewQueueExecutor(q)
	})
}
