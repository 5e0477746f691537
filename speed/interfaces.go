package speed

import (
	"context"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
)

// The speed layer's view of the stores it uses. The records, places and
// positions keep the storage packages' types (eventlog.Msg, eventlog.Start,
// eventlog.EventRef, speedstore.Position, ...): converting them would only
// copy their fields. *eventlog.Log satisfies EventLog[*eventlog.Consumer]
// and *speedstore.Store satisfies Store.

// Consumer is a durable pull consumer of one stream of the log, with
// ack-all semantics, as the speed layer reads it.
//
// Fetch returns up to max records in log order, waiting at most wait for
// the first (the rest are the ones already at hand); an empty result with a
// nil error means nothing arrived in time. Once ctx ends it returns soon,
// with ctx's error. Delivery is at least once: a record delivered and not
// acknowledged (to this consumer, or to an earlier one of the same durable
// name, perhaps in another process) comes again after the ack wait, possibly
// behind later ones, so the caller must tolerate gaps and repeats.
// Ack acknowledges m and every earlier record, waiting for the server's
// confirmation; AckNoWait does so without waiting (a lost one costs a
// redelivery); Nak asks for m to come again after delay. Acknowledging is
// a hint: the speed store's position, not the consumer, decides what is
// folded. Info reports the backlog. Close stops delivery and hands what
// is buffered back to the server; it is idempotent.
//
// Fetch, Info and Close are called from one goroutine; AckNoWait may be
// called from another (the commit in flight) at the same time as Fetch.
// An error from Fetch or Info means the consumer can no longer be trusted
// (deleted under us, connection lost): the stream loop starts again.
type Consumer interface {
	Fetch(ctx context.Context, max int, wait time.Duration) ([]eventlog.Msg, error)
	Ack(ctx context.Context, m eventlog.Msg) error
	AckNoWait(m eventlog.Msg) error
	Nak(m eventlog.Msg, delay time.Duration) error
	Info(ctx context.Context) (eventlog.Info, error)
	Close()
}

// EventLog is the event log the speed layer reads, C its consumers.
//
// Consumer opens the durable consumer name on a stream (maxAckPending
// bounds what it delivers ahead of the acknowledgements). It is reused
// when it would deliver start.Seq or earlier, and (re)created to deliver
// from start otherwise (start by time, or a consumer that acknowledged
// past start.Seq-1). DeleteConsumer removes a durable consumer; one that
// does not exist is not an error.
//
// Info returns a stream's extent (first and last sequence, records, last
// arrival). PublishLate records too-late events (their places and canonical
// bytes) on the stream's late subject; it is idempotent by place, so a
// batch published again (a commit retried after a conflict) stores each
// event once. LateEvents lists the places recorded there (at most limit).
//
// Every method is safe for concurrent use; an error means the call did
// nothing the caller can rely on (it is retried by the stream loop's
// restart).
type EventLog[C Consumer] interface {
	Consumer(ctx context.Context, stream string, p int, name string, start eventlog.Start, maxAckPending int) (C, error)
	DeleteConsumer(ctx context.Context, stream string, p int, name string) error
	Info(ctx context.Context, stream string, p int) (eventlog.StreamInfo, error)
	PublishLate(ctx context.Context, stream string, refs []eventlog.EventRef, data [][]byte) error
	LateEvents(ctx context.Context, stream string, limit int) ([]eventlog.EventRef, error)
}

// Store is the speed store: per view, the deltas the speed layer folded,
// committed together with the stream's position.
//
// Position returns a stream's committed position, never a partial one;
// found is false when there is none (first start, Reset, a Redis that lost
// its data).
//
// Commit applies the deltas (one per view of the stream, in the stream's
// view order, empty ones too) and moves the position from prevSeq to next
// in one atomic step, fenced by the position (compare-and-set): when the
// stored sequence is not prevSeq — a redelivered batch, another writer, a
// lost position while prevSeq > 0 — nothing is written and the error
// matches speedstore.ErrConflict. Committing from prevSeq 0 over an absent
// position creates it: every view joins, its cells starting at arrival
// epoch freshFrom, and next.Target is recorded. So a micro-batch is counted
// at most once whatever the redeliveries; idempotence rests on the
// position, not on the caller.
//
// Commit also appends the entities' events (ents: one delta per entity
// of the stream, empty ones too, logic.EntityDelta) in the same step; an
// entity joins the partition's commits at its delta's Join epoch (or at
// freshFrom on a fresh position) and its state of the partition is
// complete from there (see the speedstore package's entity layout).
//
// Reset drops a stream's position, then the cells of the given state keys
// (a rebuild from the log); StateKeys lists the state keys with cells;
// DropState deletes one state key's cells and its part of the position.
// BeginRebuild and CommitRebuild rebuild one view beside the stream's
// commits (see the speedstore package: errors ErrJoined, ErrNoPosition,
// ErrConflict); only the stream's writer calls Reset and the rebuilds.
//
// Every method is safe for concurrent use by many goroutines and
// processes. An error other than the sentinels above means the outcome is
// unknown (Redis unreachable): the stream loop starts again from Position.
type Store interface {
	Position(ctx context.Context, stream string, p int) (speedstore.Position, bool, error)
	Commit(ctx context.Context, stream string, p int, prevSeq uint64, next speedstore.Position, freshFrom int64, deltas []*logic.Delta, ents ...*logic.EntityDelta) error
	Reset(ctx context.Context, stream string, p int, keys []string) error
	StateKeys(ctx context.Context) ([]string, error)
	DropState(ctx context.Context, stream string, p int, key string) error
	BeginRebuild(ctx context.Context, stream string, p int, key string, from int64) (speedstore.Rebuild, error)
	CommitRebuild(ctx context.Context, stream string, p int, prev, first, next uint64, d *logic.Delta) (joined bool, err error)
}

// legacyDropper is a Store that may hold a stream's state from before
// streams had partitions (keys without a partition's hash tag).
// DropLegacy deletes that state (the position and the cells of the given
// state keys); it is called when partition 0 starts fresh, so the old
// state is neither read nor left behind. A Store without it has none.
type legacyDropper interface {
	DropLegacy(ctx context.Context, stream string, keys []string) error
}

// Shares shares the partitions of the streams out among the running speed
// processes (satisfied by *leases.Group). Run calls work for each
// partition this process comes to own, in a goroutine of its own, with a
// context that ends when the partition must be given up (ctx ended, the
// share moved to another process or was lost); work returns once it has
// stopped working on it. Run returns when ctx ended and every work
// returned. Owner names this process: the owner its commits record.
// Shares are an optimisation: a partition worked on by two processes at
// once stays exact through the position's compare-and-set.
type Shares interface {
	Run(ctx context.Context, parts []leases.Partition, work func(ctx context.Context, p leases.Partition) error) error
	Owner() string
}

// CutoffSource tells where a rebuild of a stream's speed state starts: the
// smallest batch cutoff among its views (unix ms, an epoch start; 0 = no
// batch yet: from the start of the log). The speed layer then folds exactly
// the records that arrived at or after it. A nil CutoffSource means 0.
// It must be safe for concurrent use; an error stops the rebuild, which is
// tried again.
type CutoffSource interface {
	StreamCutoff(ctx context.Context, stream string) (int64, error)
}

// eventLog is the log with its consumers seen through Consumer.
type eventLog = EventLog[Consumer]

// anyConsumer adapts an EventLog of a concrete consumer type.
type anyConsumer[C Consumer] struct{ EventLog[C] }

func (a anyConsumer[C]) Consumer(ctx context.Context, stream string, p int, name string, start eventlog.Start, maxAckPending int) (Consumer, error) {
	c, err := a.EventLog.Consumer(ctx, stream, p, name, start, maxAckPending)
	if err != nil {
		return nil, err // not a non-nil interface holding a nil C
	}
	return c, nil
}

// logOf returns log as an eventLog.
func logOf[C Consumer](log EventLog[C]) eventLog {
	if l, ok := any(log).(eventLog); ok {
		return l
	}
	return anyConsumer[C]{log}
}
