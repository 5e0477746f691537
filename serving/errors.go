package serving

import (
	"errors"

	"github.com/braid-data/braid/serving/ingest"
)

// Errors callers branch on.
var (
	// ErrUnknownStream: the stream is not declared in the catalog (the
	// ingest package's error).
	ErrUnknownStream = ingest.ErrUnknownStream
	// ErrBatchBusy may be returned (wrapped) by a BatchRunner's Start when a
	// run is in progress; Options.RunnerBusy names another such sentinel.
	ErrBatchBusy = errors.New("serving: a batch run is in progress")
)
