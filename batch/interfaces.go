package batch

import (
	"context"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
)

// The stores the batch layer reads and writes, as it uses them. The
// storage packages return concrete types that satisfy these (held to the
// whole of each store's contract by storage/storagetest's suites).

// Partition is a stream partition: partition P (0 ≤ P <
// logic.Stream.Partitions) of stream Stream's log.
type Partition struct {
	Stream string
	P      int
}

// Shares shares the stream partitions out among the processes that run
// them (archivers), each partition to one at a time.
//
// Run calls work for each partition of parts this process holds, in a
// goroutine of its own, with a context that ends when the process must
// give the partition up (another process takes it) or when ctx ends; work
// returns once its context ended (an error gives the partition up for a
// while, logged). A partition's work is not started again in the process
// before the previous one returned. A partition no process holds any more (one died) is
// taken by a survivor. Run returns when ctx ends and every work returned.
// Two processes may both run a partition for a moment around a handover:
// the lake's fencing, not the shares, keeps each record in it once.
type Shares interface {
	Run(ctx context.Context, parts []Partition, work func(ctx context.Context, p Partition) error) error
}

// LakeReader is what audits read from the lake.
//
// PartCheckpoint returns the committed checkpoint of a stream partition
// (the zero value when none): every record of the partition up to its Seq
// is in the files Files lists, and every record of it that arrived before
// its CoveredUntil has a sequence at or below Seq. Files returns the paths
// of the stream's committed files (of every partition), ordered by first
// sequence, each record in exactly one, readable by DuckDB's read_parquet
// (files written before stream partitions have no _part column: read it
// as coalesce(_part, 0)); files written but not committed are never
// listed. A checkpoint read before Files covers at most what Files lists
// (the lake only grows). Both are safe for concurrent use with the
// archivers writing; an error means the lake could not be read (the run
// or audit fails, nothing is published). *lake.Lake satisfies it.
type LakeReader interface {
	PartCheckpoint(stream string, p int) (lake.Checkpoint, error)
	Files(stream string) ([]string, error)
}

// LakeWriter is what the archiver writes to the lake; each stream
// partition has one writer at a time.
//
// RecoverPart, before a partition's writer starts, removes what a writer
// of the partition that crashed (or lost it) before committing left, so
// those files never become visible, and takes the partition's checkpoint
// as the one the writer's commits build on. PartCheckpoint returns the
// partition's committed checkpoint (zero: none): the archiver resumes
// after its Seq. WriteReleasing writes rows (a contiguous, ascending
// sequence range of one partition) as immutable files, invisible until a
// checkpoint of the partition covers them, and zeroes each row as it is
// written (rows must not be used afterwards); it returns the files and
// bytes written, or a *lake.SchemaError when the rows' types cannot be
// read alongside the lake's files. CommitPart records the partition's
// checkpoint (state and position together) and makes its files up to its
// Seq visible at once; the archiver acknowledges the log only after it
// returns nil; lake.ErrConflict when another writer moved the partition
// since (the archiver starts the partition again from the lake). An error
// from any of them leaves the lake as it was (uncommitted files aside):
// the archiver retries from the last checkpoint. Safe for concurrent use
// by the writers of different partitions. *lake.Lake satisfies it.
type LakeWriter interface {
	RecoverPart(stream string, p int) error
	PartCheckpoint(stream string, p int) (lake.Checkpoint, error)
	WriteReleasing(s *logic.Stream, rows []lake.Row) (files []string, bytes int64, err error)
	CommitPart(stream string, p int, cp lake.Checkpoint) error
}

// LakeUpkeep is the lake's upkeep, which the archiver runs in the
// background beside its writes.
//
// Compact merges the small files of a stream partition, per date
// partition, into files of about targetBytes and replaces them in one
// commit: a reader sees the old files or the new, never both, never
// neither; it may run while the stream's writers commit (neither loses
// the other's). DropBefore removes in one commit the stream's date
// partitions dated before date (YYYY-MM-DD, UTC) and returns how many
// files went. Files either removes stay readable for readers of an
// older manifest until Sweep, past the lake's grace period, deletes them
// (it returns how many). An error leaves the lake as it was (the archiver
// logs it and tries again at its next round). Safe for concurrent use.
// *lake.Lake satisfies it.
type LakeUpkeep interface {
	Compact(ctx context.Context, s *logic.Stream, p int, targetBytes int64) (lake.CompactStats, error)
	DropBefore(ctx context.Context, stream, date string) (int, error)
	Sweep(ctx context.Context, stream string) (int, error)
}

// LogTrimmer trims the event log, in place of a JetStream max age (which
// would delete records whether archived or not). Trim removes the records
// of a stream partition that are both stored before before (the server's
// clock) and at or below sequence upTo, and returns how many went; the
// archiver passes now minus nats.max_age and the lake's committed
// checkpoint of the partition, so no record leaves the log before it is
// in the lake. Safe for concurrent use.
// *eventlog.Log satisfies it.
type LogTrimmer interface {
	Trim(ctx context.Context, stream string, p int, before time.Time, upTo uint64) (uint64, error)
}

// RunLake is what batch runs read from the lake.
//
// PartCheckpoint returns a stream partition's committed checkpoint (as
// LakeReader's); an on-demand run polls it while it waits for the lake to
// cover its request. Manifest returns a stream's committed state: the
// checkpoints of its partitions and the files they cover, with each
// file's event date and the range of its rows' arrivals (Gen 0: nothing
// committed yet); every record that arrived before the stream's
// CoveredUntil (lake.Manifest.CoveredUntil) is in those files. Local
// gives local copies of files for the runner's own workers (LakeObjects).
// Safe for concurrent use with the archiver writing; an error fails the
// views of the stream. *lake.Lake satisfies it.
type RunLake interface {
	PartCheckpoint(stream string, p int) (lake.Checkpoint, error)
	Manifest(ctx context.Context, stream string) (lake.Manifest, error)
	LakeObjects
}

// ViewVersions is what batch runs do with the batch view store.
//
// Current returns the current version (nil before the first publish).
// WritePart stores one unit's rows (PartWriter). PublishParts makes ver
// current, all its views or none, on top of base (the version the run
// built on; nil: none): each view of ver lists its parts (written by
// WritePart in this run or carried over from earlier versions) and holds
// its Cutoff; readers see the previous version or the whole new one;
// batchviews.ErrConflict when another publish made a version current
// since base, and then nothing of ver is current. SaveRun writes or
// replaces a run's record. LockRuns takes the store's own exclusive run
// lock without waiting (batchviews.ErrLocked while a run holds it); a run
// uses it unless the runner is given a lock shared by every host.
// RecoverInterrupted, called under the run lock, settles the runs a dead
// process left recorded as running. The methods are safe for concurrent
// use. *batchviews.Store satisfies it.
type ViewVersions interface {
	Current() (*batchviews.Version, error)
	PartWriter
	PublishParts(ctx context.Context, base, ver *batchviews.Version) error
	SaveRun(r batchviews.Run) error
	LockRuns() (unlock func(), err error)
	RecoverInterrupted() (int, error)
}

// SpeedExpirer drops a view's speed-layer cells of arrival epochs before
// beforeEpoch (unix ms); key is the view's state key (logic.View.StateKey).
// Epochs at or after beforeEpoch are left untouched. Expire must be
// idempotent and safe while the speed layer commits; a failure is retried
// implicitly by the next run (which expires below a later cutoff).
// (*speedstore.Store).Expire satisfies it.
type SpeedExpirer interface {
	Expire(ctx context.Context, s *logic.Stream, key string, beforeEpoch int64) error
}

// SpeedCell is one cell of the speed layer's state, as an audit reads it:
// the deltas of the records that arrived in arrival epoch Epoch (its
// start, unix ms) for the window starting at Window (unix ms) and the
// encoded group Group (logic.View.GroupKey), in the view's slots.
type SpeedCell struct {
	Epoch  int64
	Window int64
	Group  string
	State  logic.State
}

// SpeedSnapshot is what an audit reads from the speed layer.
//
// Position returns the last log sequence the speed layer committed on a
// stream partition (found false: it has none); a position is never
// partial: the cells hold exactly the partition's records up to it. Cells returns the view's cells
// with window start in [fromMs, toMs) and arrival epoch >= minEpoch, each
// (epoch, window, group) once, in any order; the states are the caller's.
// A Cells racing a commit may see part of it: the audit reads the
// position before and after, and reads again until they agree. Safe for
// concurrent use; an error fails the audit. The speed store, its cells
// converted field by field, satisfies it.
type SpeedSnapshot interface {
	Position(ctx context.Context, stream string, p int) (seq uint64, found bool, err error)
	Cells(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]SpeedCell, error)
}

// LogConsumer is a durable pull consumer of one stream of the event log,
// with ack-all semantics, as the archiver reads it.
//
// Fetch returns up to max records in log order, waiting at most wait for
// the first; an empty result with a nil error means nothing arrived in
// time, and once ctx ends it returns soon with ctx's error. Delivery is at
// least once: a record delivered and not acknowledged (here, or to an
// earlier consumer of the same durable name) comes again after the ack
// wait, possibly behind later ones; the lake's checkpoint, not the
// consumer, decides what is written. Ack acknowledges m and every earlier
// record, waiting for the server; Nak asks for m to come again after
// delay. Info reports the consumer's backlog. Close stops delivery and
// hands what is buffered back to the server. All are called from the
// stream's one goroutine. An error from Fetch or Info means the consumer
// can no longer be trusted: the stream's archiving starts again from the
// lake's checkpoint.
type LogConsumer interface {
	Fetch(ctx context.Context, max int, wait time.Duration) ([]eventlog.Msg, error)
	Ack(ctx context.Context, m eventlog.Msg) error
	Nak(m eventlog.Msg, delay time.Duration) error
	Info(ctx context.Context) (eventlog.Info, error)
	Close()
}

// EventLog is the event log the archiver reads, C its consumers.
//
// Consumer opens the durable consumer name on a stream (maxAckPending
// bounds what it delivers ahead of the acknowledgements), delivering from
// start.Seq on (an existing consumer that would deliver start.Seq or
// earlier is reused). Info returns a stream's extent (first and last
// sequence: records below the first are gone, by retention). Both are
// safe for concurrent use; an error means nothing was opened or read.
// *eventlog.Log satisfies EventLog[*eventlog.Consumer].
type EventLog[C LogConsumer] interface {
	Consumer(ctx context.Context, stream string, p int, name string, start eventlog.Start, maxAckPending int) (C, error)
	Info(ctx context.Context, stream string, p int) (eventlog.StreamInfo, error)
}

// anyLog is the log with its consumers seen through LogConsumer.
type anyLog = EventLog[LogConsumer]

// anyConsumers adapts an EventLog of a concrete consumer type.
type anyConsumers[C LogConsumer] struct{ EventLog[C] }

func (a anyConsumers[C]) Consumer(ctx context.Context, stream string, p int, name string, start eventlog.Start, maxAckPending int) (LogConsumer, error) {
	c, err := a.EventLog.Consumer(ctx, stream, p, name, start, maxAckPending)
	if err != nil {
		return nil, err // not a non-nil interface holding a nil C
	}
	return c, nil
}
