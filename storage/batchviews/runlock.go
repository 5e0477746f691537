package batchviews

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrLocked: another process holds the store's run lock (a batch run is in
// progress there).
var ErrLocked = errors.New("batchviews: a batch run is in progress in another process")

// InterruptedError is the error recorded for a run whose process stopped
// before it finished.
const InterruptedError = "interrupted: the process stopped during the run; the previous version stayed current"

// RunLock is the run lock shared by every process that may run batch runs.
//
// Lock takes it without waiting and returns the function that releases it;
// ErrLocked while another holder (in this process or any other) has it. A
// holder that dies loses it (at once or after a lease expires), so a run
// recorded as running whose lock is free was interrupted.
type RunLock interface {
	Lock() (unlock func(), err error)
}

// flockRunLock is an exclusive flock on a file: every process of the host
// shares it, and the kernel drops it when its holder ends, even on kill -9.
// A second Lock in the same process fails too while the first is held (each
// Lock opens the file anew).
type flockRunLock struct {
	path string
}

func (l flockRunLock) Lock() (func(), error) {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("batchviews: run lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("batchviews: run lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// localRunLock excludes the holders of one Store handle only.
type localRunLock struct {
	mu sync.Mutex
}

func (l *localRunLock) Lock() (func(), error) {
	if !l.mu.TryLock() {
		return nil, ErrLocked
	}
	var once sync.Once
	return func() { once.Do(l.mu.Unlock) }, nil
}

// LockRuns takes the store's run lock (WithRunLock; by default an flock on
// RUNLOCK in the directory of a store on local files), held until the
// returned function is called or the process ends. It never waits:
// ErrLocked when another holder has it. One lock per run: a second
// LockRuns in the same process fails too while the first is held. Once it
// holds the lock it reads the current pointer afresh, so that Current
// shows the holder every version published before (whatever the pointer
// TTL).
func (s *Store) LockRuns() (unlock func(), err error) {
	unlock, err = s.lock.Lock()
	if err != nil {
		return nil, err
	}
	if _, err := s.current(context.Background(), true); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// RecoverInterrupted settles every run still recorded as running, and
// returns how many it settled. Call it holding the run lock (LockRuns) and
// before starting a run: then no run is in progress, so a "running" record
// is one whose process died mid-run. A run whose version is the current
// one died after publishing it (between its pointer and the save of its
// record): it is recorded as succeeded, with what its version says.
// Every other one is marked failed with InterruptedError (and the clean-up
// after the next publish removes the parts it wrote).
func (s *Store) RecoverInterrupted() (int, error) {
	runs, err := s.Runs()
	if err != nil {
		return 0, err
	}
	cur, err := s.current(context.Background(), true)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range runs {
		if r.Status != StatusRunning {
			continue
		}
		if cur != nil && cur.ID == r.ID {
			r.Status, r.Version, r.RowsOut = StatusSucceeded, cur.ID, 0
			r.Cutoffs = map[string]int64{}
			for name, vv := range cur.Views {
				r.Cutoffs[name] = vv.Cutoff
				r.RowsOut += int64(vv.Rows)
			}
		} else {
			r.Status, r.Error = StatusFailed, InterruptedError
		}
		if r.Finished.IsZero() {
			r.Finished = time.Now().UTC()
		}
		if err := s.SaveRun(r); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
