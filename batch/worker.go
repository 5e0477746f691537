package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/braid-data/braid/storage/workqueue"
)

// UnitQueue is the work queue a run hands its units to.
//
// Submit publishes a run's tasks (IDs distinct within the run) to every
// worker and calls done with the first result of each, from one
// goroutine, until every task has one (nil), or until ctx ends (an error
// wrapping ctx's; the run's queued tasks are withdrawn). A task whose
// last attempt failed has a result with Err set. (*workqueue.Queue)
// satisfies it.
type UnitQueue interface {
	Submit(ctx context.Context, run string, tasks []workqueue.Task, done func(workqueue.Result)) error
}

// UnitSource is the work queue a worker takes units from.
//
// Serve calls h for tasks, with n goroutines at a time, until ctx ends
// (then it returns nil): h's bytes are the task's result; an error means
// this attempt failed and the task is handed out again (its last failure
// becomes an error result). A worker that stops mid-task loses nothing:
// the task goes to another worker. (*workqueue.Queue) satisfies it.
type UnitSource interface {
	Serve(ctx context.Context, n int, h workqueue.Handler) error
}

// QueueExecutor is the UnitExecutor over a work queue: any number of
// Workers, in any process, compute the units.
type QueueExecutor struct{ q UnitQueue }

// NewQueueExecutor returns an executor handing units to q.
func NewQueueExecutor(q UnitQueue) *QueueExecutor { return &QueueExecutor{q: q} }

// taskID names a unit within its run.
func taskID(u Unit) string { return u.View + "/" + u.Date }

// Execute implements UnitExecutor: the units of each run go to the queue
// as one submission.
func (e *QueueExecutor) Execute(ctx context.Context, units []Unit, done func(UnitResult)) error {
	byRun := map[string][]Unit{}
	var runs []string
	for _, u := range units {
		if _, ok := byRun[u.Run]; !ok {
			runs = append(runs, u.Run)
		}
		byRun[u.Run] = append(byRun[u.Run], u)
	}
	var mu sync.Mutex // done is called by one goroutine per run
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.submit(ctx, run, byRun[run], func(r UnitResult) {
				mu.Lock()
				defer mu.Unlock()
				done(r)
			})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (e *QueueExecutor) submit(ctx context.Context, run string, units []Unit, done func(UnitResult)) error {
	tasks := make([]workqueue.Task, len(units))
	byID := make(map[string]Unit, len(units))
	for i, u := range units {
		data, err := json.Marshal(u)
		if err != nil {
			return fmt.Errorf("batch: encode unit %s: %w", u.ID(), err)
		}
		tasks[i] = workqueue.Task{Run: run, ID: taskID(u), Data: data}
		byID[tasks[i].ID] = u
	}
	err := e.q.Submit(ctx, run, tasks, func(r workqueue.Result) {
		u, ok := byID[r.ID]
		if !ok {
			return
		}
		res := UnitResult{}
		switch {
		case r.Err != "":
			res.Err = r.Err
		default:
			if err := json.Unmarshal(r.Data, &res); err != nil {
				res = UnitResult{Err: fmt.Sprintf("decode the result of unit %s: %v", u.ID(), err)}
			}
		}
		res.Unit = u
		done(res)
	})
	if err != nil {
		return fmt.Errorf("batch: units of run %s: %w", run, err)
	}
	return nil
}

// Worker computes the units of batch runs that any process hands out
// through a work queue: `braid batch` processes, and `braid up` in
// process.
type Worker struct {
	src    UnitSource
	c      UnitComputer
	n      int
	logger *slog.Logger
}

// NewWorker returns a worker computing n units at a time (at least 1)
// with c. logger may be nil.
func NewWorker(src UnitSource, c UnitComputer, n int, logger *slog.Logger) *Worker {
	if logger == nil {
		logger = slog.Default()
	}
	return &Worker{src: src, c: c, n: max(n, 1), logger: logger.With("component", "batch-worker")}
}

// Run computes units until ctx ends; it returns nil then, or the error
// that kept it from taking units.
func (w *Worker) Run(ctx context.Context) error {
	w.logger.Info("batch worker started", "parallel", w.n)
	err := w.src.Serve(ctx, w.n, w.handle)
	if err != nil {
		return fmt.Errorf("batch: worker: %w", err)
	}
	return nil
}

func (w *Worker) handle(ctx context.Context, t workqueue.Task) ([]byte, error) {
	var u Unit
	var res UnitResult
	if err := json.Unmarshal(t.Data, &u); err != nil {
		res.Err = fmt.Sprintf("undecodable unit: %v", err)
	} else if u.Run != t.Run {
		res.Err = fmt.Sprintf("unit of run %s queued for run %s", u.Run, t.Run)
	} else {
		t0 := time.Now()
		var err error
		res, err = w.c.Compute(ctx, u)
		if err != nil {
			return nil, err
		}
		if res.Err != "" {
			w.logger.Error("batch unit refused", "run", u.Run, "view", u.View, "date", u.Date, "err", res.Err)
		} else {
			w.logger.Info("batch unit computed", "run", u.Run, "view", u.View, "date", u.Date, "rows_read", res.RowsRead, "rows", res.Part.Rows, "attempt", t.Attempt, "ms", time.Since(t0).Milliseconds())
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("batch: encode unit result: %w", err)
	}
	return b, nil
}
