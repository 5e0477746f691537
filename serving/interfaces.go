package serving

import (
	"context"

	"github.com/braid-data/braid/storage/batchviews"
)

// The interfaces serving's own handlers consume. Those of the query
// engine (SpeedReader, SpeedStatus, CommitNotifier) are declared in
// serving/query; the status handler reads the speed position through
// query.SpeedStatus as well, so one implementation serves both.

// ArchivePosition is the archiver's committed checkpoint on a stream.
type ArchivePosition struct {
	Seq          uint64 // last log sequence written to the lake (0: none)
	CoveredUntil int64  // every record that arrived before it (unix ms) is in the lake
}

// ArchiveStatus reports the archiver's progress on a stream (the lake's
// checkpoint: (*lake.Lake).Checkpoint maps onto it). Safe for concurrent use.
type ArchiveStatus interface {
	ArchiveCheckpoint(ctx context.Context, stream string) (ArchivePosition, error)
}

// BatchRunner starts batch runs. *batch.Runner satisfies it.
//
// Run computes the views (nil: all) synchronously and returns the run's
// record (status failed, with its error, when it failed; status partial,
// with an error, when some views failed and the others were published).
// Start begins a run in the background and returns its id, or an error
// matching Options.RunnerBusy or ErrBatchBusy (errors.Is) when a run is in
// progress. Both cover the events acknowledged before the call (the
// record's requested_at and covers_request).
// Serving checks view names against the catalog before calling either.
type BatchRunner interface {
	Run(ctx context.Context, views []string) (batchviews.Run, error)
	Start(views []string) (string, error)
}
