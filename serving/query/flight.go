package query

import (
	"context"
	"sync"
)

// flights runs one computation per key for every caller that asks for it
// while it runs: the first caller starts it, the others wait for the same
// result. The computation runs on a context of its own (under the
// engine's), which ends when every caller waiting for it has gone: a
// query whose clients all left stops, and one whose clients stay is not
// stopped by one of them leaving.
type flights[T any] struct {
	base context.Context // the engine's: ends every computation at Close
	mu   sync.Mutex
	m    map[string]*flight[T]
	// onJoin is called (outside the lock) when a caller joins a
	// computation already running.
	onJoin func()
}

type flight[T any] struct {
	done    chan struct{}
	val     T
	err     error
	waiters int
	cancel  context.CancelFunc
}

func newFlights[T any](base context.Context, onJoin func()) *flights[T] {
	return &flights[T]{base: base, m: map[string]*flight[T]{}, onJoin: onJoin}
}

// do returns fn's result for key, running fn unless a computation of key
// is already running, whose result it then waits for. It returns ctx's
// error when ctx ends first; the computation goes on while another caller
// waits for it, and is cancelled when none does.
func (g *flights[T]) do(ctx context.Context, key string, fn func(context.Context) (T, error)) (T, error) {
	g.mu.Lock()
	f, ok := g.m[key]
	if ok {
		f.waiters++
		g.mu.Unlock()
		if g.onJoin != nil {
			g.onJoin()
		}
	} else {
		fctx, cancel := context.WithCancel(g.base)
		f = &flight[T]{done: make(chan struct{}), waiters: 1, cancel: cancel}
		g.m[key] = f
		g.mu.Unlock()
		go func() {
			defer cancel()
			val, err := fn(fctx)
			g.mu.Lock()
			f.val, f.err = val, err
			if g.m[key] == f {
				delete(g.m, key)
			}
			g.mu.Unlock()
			close(f.done)
		}()
	}
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody waits for it any more: stop it, and let the next
			// caller start afresh.
			f.cancel()
			if g.m[key] == f {
				delete(g.m, key)
			}
		}
		g.mu.Unlock()
		var zero T
		return zero, ctx.Err()
	}
}
