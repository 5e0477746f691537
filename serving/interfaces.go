package serving

import (
	"context"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/alerts"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
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

// ArchiveStatus reports the archiver's progress on partition p of a
// stream (the lake's checkpoint of the partition:
// (*lake.Lake).PartCheckpoint maps onto it). Safe for concurrent use.
type ArchiveStatus interface {
	ArchiveCheckpoint(ctx context.Context, stream string, p int) (ArchivePosition, error)
}

// The roles of the processes that share a stream's partitions out among
// themselves (PartitionOwners).
const (
	RoleSpeed   = "speed"
	RoleArchive = "archive"
)

// PartitionOwners tells which process holds each partition of a stream in
// a role (RoleSpeed, RoleArchive), for /v1/status.
//
// PartitionOwners returns n owners (process ids), in partition order, ""
// for a partition no process holds now (or whose holder it cannot tell).
// Safe for concurrent use; an error leaves the owners out of the status
// (null, with owners_error).
type PartitionOwners interface {
	PartitionOwners(ctx context.Context, role, stream string, n int) ([]string, error)
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

// BatchViews is the batch views' store as serving reads it: what the query
// engine reads (query.BatchViews), and the batch runs' records for
// GET /v1/batch/runs and /v1/status. (*batchviews.Store) satisfies it.
//
// Runs returns every kept run record, newest first; Run returns one
// (found=false when there is none). Both are safe for concurrent use; an
// error means the records could not be read (the route answers 500).
type BatchViews interface {
	query.BatchViews
	Runs() ([]batchviews.Run, error)
	Run(id string) (run batchviews.Run, found bool, err error)
}

// EventLog is the event log as serving uses it: the ingest use case's log
// (ingest.Log), the figures of /v1/status and the listings of dead
// letters and of blocked and review events.
// (*eventlog.Log) satisfies it.
//
// EventCount, DeadLetterCount and LateCount are a stream's events, dead
// letters and too-late events stored so far (over every partition); Info
// is the state of partition p of its log.
// DeadLetters lists up to limit dead letters of the stream after cursor
// after, in log order. DecidedCount and DecidedEvents are the same for
// the events the stream's rules held back at ingest with outcome o
// (logic.Block or logic.Review). All are safe for concurrent use; an
// error means the figure or the list could not be read (the status shows
// the error, the listing answers 500/503).
type EventLog interface {
	ingest.Log
	EventCount(ctx context.Context, stream string) (uint64, error)
	DeadLetterCount(ctx context.Context, stream string) (uint64, error)
	LateCount(ctx context.Context, stream string) (uint64, error)
	Info(ctx context.Context, stream string, p int) (eventlog.StreamInfo, error)
	DeadLetters(ctx context.Context, stream string, after eventlog.Cursor, limit int) ([]eventlog.DeadLetter, error)
	DecidedCount(ctx context.Context, stream string, o logic.Outcome) (uint64, error)
	DecidedEvents(ctx context.Context, stream string, o logic.Outcome, after eventlog.Cursor, limit int) ([]eventlog.Decided, error)
}

// SpeedCost is what a view's speed state costs in Redis: its cells
// (arrival epoch, window and group), the Redis keys holding them and their
// memory in bytes; Exact is false when the figures are scaled up from a
// sample.
type SpeedCost struct {
	Cells, Keys, Bytes int64
	Exact              bool
}

// SpeedUsage measures what views' speed state costs in Redis, for
// /metrics, /v1/status and the dashboard ((*speedstore.Store).Usage maps
// onto it).
//
// SpeedUsage returns the cost of view v's speed state (its cells under
// its definition, in every partition of its stream; nothing for a view
// without speed state). It only reads, within a bounded budget of Redis
// work, and is safe for concurrent use; an error leaves the cost unknown
// (null in the status, no series in /metrics).
type SpeedUsage interface {
	SpeedUsage(ctx context.Context, v *logic.View) (SpeedCost, error)
}

// Alerts is the alerts' state as the API shows it. (*alerts.Service)
// satisfies it.
//
// List returns every alert's definition, rows firing now, recent
// deliveries and dead-letter count (parts it cannot read named in each
// one's Errors). DeadLetters lists up to limit (0: all) of an alert's dead
// letters, oldest first; Replay puts them back for delivery with their
// ids and returns how many. Both answer an error matching
// alerts.ErrUnknownAlert for an alert the catalog lacks and
// alerts.ErrUnavailable when this process cannot reach them; any other
// error means the queue could not be read now. Safe for concurrent use.
type Alerts interface {
	List(ctx context.Context) []alerts.Status
	DeadLetters(ctx context.Context, alert string, limit int) ([]alerts.DeadLetter, error)
	Replay(ctx context.Context, alert string) (int, error)
}
