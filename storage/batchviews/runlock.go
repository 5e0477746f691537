package batchviews

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrLocked: another process holds the store's run lock (a batch run is in
// progress there).
var ErrLocked = errors.New("batchviews: a batch run is in progress in another process")

// InterruptedError is the error recorded for a run whose process stopped
// before it finished.
const InterruptedError = "interrupted: the process stopped during the run; the previous version stayed current"

// LockRuns takes the store's run lock: an exclusive flock on RUNLOCK in the
// store's directory, held until the returned function is called or the
// process ends (the kernel drops it even on kill -9). It never waits:
// ErrLocked when another holder has it. One lock per run: a second
// LockRuns in the same process fails too while the first is held.
func (s *Store) LockRuns() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "RUNLOCK"), os.O_CREATE|os.O_RDWR, 0o644)
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

// RecoverInterrupted settles every run still recorded as running, and
// returns how many it settled. Call it holding the run lock (LockRuns) and
// before starting a run: then no run is in progress, so a "running" record
// is one whose process died mid-run. A run whose version is the current
// one died after publishing it (between the CURRENT rename and the save of
// its record): it is recorded as succeeded, with what its version says.
// Every other one is marked failed with InterruptedError.
func (s *Store) RecoverInterrupted() (int, error) {
	runs, err := s.Runs()
	if err != nil {
		return 0, err
	}
	cur, err := s.Current()
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
