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

// RecoverInterrupted marks every run still recorded as running as failed,
// with InterruptedError, and returns how many it marked. Call it holding
// the run lock (LockRuns) and before starting a run: then no run is in
// progress, so a "running" record is one whose process died mid-run.
func (s *Store) RecoverInterrupted() (int, error) {
	runs, err := s.Runs()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range runs {
		if r.Status != StatusRunning {
			continue
		}
		r.Status, r.Error = StatusFailed, InterruptedError
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
