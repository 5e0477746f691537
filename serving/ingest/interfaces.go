package ingest

import (
	"context"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
)

// Log is the event log the use case writes to and replays from: the four
// parts below. *eventlog.Log satisfies it.
type Log interface {
	Appender
	DeadLetterQueue
	DeadLetterSource
	DecidedLog
}

// Appender appends a stream's clean events to the log.
//
// MaxEvent is the largest event (id plus canonical record) one log record
// holds; it does not change while the log is open. Publish appends recs in
// order and returns once every one is stored durably; a record whose
// non-empty ID was stored within the log's dedup window is stored once and
// counts as stored, so a retried call stores nothing twice. An error
// (matching eventlog.ErrFull, eventlog.ErrUnavailable, ...) means some,
// all or none of recs may be stored: the caller retries the whole or
// fails. Both are safe for concurrent use.
type Appender interface {
	MaxEvent() int
	Publish(ctx context.Context, stream string, recs []eventlog.Record) error
}

// DeadLetterQueue stores a stream's dead letters.
//
// DeadLetterWriter returns a writer of the stream's dead letters, used by
// one goroutine at a time (the writers of a process share the stream's
// records): Add queues a letter as it comes, made to fit one log record
// (its payload cut to a head when it would not, and then marked
// unreplayable), deduplicated by its non-empty ID within the dedup window
// like events, storing as it goes with a few records in flight; Close
// returns once every letter added is stored. An error from either means
// the letters added so far may or may not be stored, and the writer
// fails from then on.
type DeadLetterQueue interface {
	DeadLetterWriter(stream string) *eventlog.DeadLetterWriter
}

// DeadLetterSource reads and removes a stream's dead-letter records, for
// replay. Records hold letters in order; a record is removed whole.
//
// LastDeadLetterSeq is the sequence of the last dead-letter record stored,
// of any stream (0: none): records stored after the call come after it.
// DeadLetterRecord returns the first record of the stream at sequence
// from or later, with every letter it holds, in order, each with its
// place (found is false when there is none). DeleteDeadLetterRecord
// removes record seq and its letters. All are safe for concurrent use; an
// error means nothing was read or removed.
type DeadLetterSource interface {
	LastDeadLetterSeq(ctx context.Context) (uint64, error)
	DeadLetterRecord(ctx context.Context, stream string, from uint64) (rec eventlog.LetterRecord, found bool, err error)
	DeleteDeadLetterRecord(ctx context.Context, seq uint64) error
}

// DecidedLog keeps the events the stream's rules held back at ingest:
// blocked ones (stored nowhere else) and those kept for review (also
// appended to the clean log).
//
// PublishDecided stores ds (each with Outcome block or review; each fits
// one log record: an event of at most MaxEvent −
// eventlog.DecidedOverhead bytes) and returns once every one is stored
// durably; one whose non-empty ID was stored with the same outcome within
// the log's dedup window is stored once and counts as stored — the clean
// log's ids are not touched, so a blocked id is blocked again on a retry.
// An error means some, all or none may be stored: the caller retries the
// whole or fails. Safe for concurrent use.
type DecidedLog interface {
	PublishDecided(ctx context.Context, stream string, ds []eventlog.Decided) error
}

// Features answers entity features for decisions at ingest (the rules'
// features.<name>).
//
// Lookup returns the features of an entity (a name of the catalog's
// entities) for each of keys, in order (keys are distinct, rendered as
// logic.Entity.KeyOf renders them), over windows ending now: one map per
// key, by feature name, len(keys) of them. A feature missing from its map,
// or a zero Value, is null. Events of the request being decided are not
// among those counted. Safe for concurrent use; an error means the
// features could not be read: the ingest fails (ErrFeatures, a 503) and
// stores no event.
type Features interface {
	Lookup(ctx context.Context, entity string, keys []string) ([]map[string]logic.Value, error)
}
