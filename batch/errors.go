package batch

import "errors"

// Errors callers branch on.
var (
	ErrBusy        = errors.New("batch: a run is already in progress")
	ErrUnknownView = errors.New("batch: unknown view")
)
