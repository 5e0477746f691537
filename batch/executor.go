package batch

import (
	"context"
	"fmt"
	"sync"
)

// UnitExecutor computes a run's work units, wherever its workers are.
//
// Execute hands out units and calls done once per unit with its result
// (Unit set to that unit), from any goroutine, possibly concurrently;
// it returns nil when every unit has a result, or ctx's error soon after
// ctx ends (results may then be missing). A unit that cannot be computed
// gets a result with Err set, never a missing one. Units of one call have
// distinct IDs. Safe for concurrent use.
type UnitExecutor interface {
	Execute(ctx context.Context, units []Unit, done func(UnitResult)) error
}

// UnitComputer computes one unit where it runs (a worker).
//
// Compute returns the unit's result; a result with Err set is a final
// failure (e.g. a worker whose catalog has another definition of the view
// refuses it), while an error means this attempt failed and another one
// may succeed (a queue hands the unit out again, up to its limit). It must
// honour ctx and be safe for concurrent use.
type UnitComputer interface {
	Compute(ctx context.Context, u Unit) (UnitResult, error)
}

// Pool is the in-process UnitExecutor: N goroutines computing units, each
// once (an error fails the unit).
type Pool struct {
	n int
	c UnitComputer
}

// NewPool returns a pool of n goroutines (at least 1) computing with c.
func NewPool(n int, c UnitComputer) *Pool { return &Pool{n: max(n, 1), c: c} }

// Execute implements UnitExecutor.
func (p *Pool) Execute(ctx context.Context, units []Unit, done func(UnitResult)) error {
	next := make(chan Unit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range min(p.n, len(units)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range next {
				res, err := p.c.Compute(ctx, u)
				if err != nil {
					res = UnitResult{Err: err.Error()}
				}
				res.Unit = u
				if ctx.Err() != nil {
					return // the run is over: a result now would be late
				}
				done(res)
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for _, u := range units {
		select {
		case next <- u:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if got == len(units) {
		return nil
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("batch: units: %w", err)
	}
	return nil
}
