package batch

import "errors"

// Errors callers branch on.
var (
	ErrBusy        = errors.New("batch: a run is already in progress")
	ErrUnknownView = errors.New("batch: unknown view")
	// ErrViewsFailed: some views of a run failed (see the run record's
	// failed_views); with status partial the others were published.
	ErrViewsFailed = errors.New("batch: views failed")
)
