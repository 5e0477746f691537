package query

import (
	"context"
	"strconv"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/batchviews"
)

// SpeedCell is one cell of the speed layer's state for a view: the deltas
// of the records that arrived in arrival epoch Epoch (its start, unix ms),
// for the window starting at Window (unix ms) and the encoded group Group
// (logic.View.GroupKey). State holds the view's slots (logic.View.Slots;
// NaN = empty min/max).
type SpeedCell struct {
	Epoch  int64
	Window int64
	Group  string
	State  logic.State
}

// SpeedReader reads the speed layer's cells.
//
// ReadCells calls fn with each cell of view v whose window start is in
// [fromMs, toMs) and whose epoch is >= minEpoch, of every partition of
// its stream, in any order; a (epoch, window, group) comes at most once
// per partition (Merge adds up equal cells). An error from fn stops the
// read and is returned as is, so a caller bounds what it reads; once ctx
// ends the read stops soon, with ctx's error. fn may keep a cell but not
// look into its state, which is whole once ReadCells returns nil (the
// states are then owned by the caller). It must be safe for concurrent
// use. Any other error fails the query (the answer would miss events).
// (*speedstore.Store).ReadEach with its Cell converted field by field
// satisfies this contract.
type SpeedReader interface {
	ReadCells(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64, fn func(SpeedCell) error) error
}

// StreamSpeed is the speed layer's committed position on a stream: each
// partition's (Parts, by partition number) and what they make together.
// SpeedOf makes one from its parts; the aggregate fields are the rule over
// them, never set on their own.
type StreamSpeed struct {
	Found bool // every partition has a position (false: the speed layer has not started one, or lost it)
	// Seq is the sum of the partitions' sequences: the log records folded
	// over all partitions (0: none). A commit of any partition raises it;
	// Seqs names the position exactly.
	Seq uint64
	// Watermark is the stream's largest event time, unix ms (0: none): the
	// partitions' combined by logic.StreamMark with defaults.PartitionIdle;
	// the engine subtracts the stream's allowed lateness.
	Watermark int64
	Parts     []PartSpeed
}

// PartSpeed is the speed layer's committed position on one partition of a
// stream.
type PartSpeed struct {
	Found       bool   // the partition has a position
	Seq         uint64 // last log sequence of the partition folded into the speed store (0: none)
	Watermark   int64  // the largest event time the partition has seen, unix ms (0: none)
	LastArrival int64  // the arrival (unix ms) of the last record folded (0: unknown)
	// Target is, for a position the speed layer created fresh (a first
	// start over a log, a Redis that lost its data, a replay), the last log
	// sequence it had to refold then: its views miss events until Seq
	// reaches it (0: none).
	Target uint64
	// Views holds each view's part of the position, by state key
	// (logic.View.StateKey).
	Views map[string]ViewSpeed
}

// SpeedOf is a stream's speed position made of its partitions': found
// when every partition is, Seq their sum and Watermark their
// logic.StreamMark (over the partitions found). A pure function; parts is
// kept as is.
func SpeedOf(parts []PartSpeed) StreamSpeed {
	out := StreamSpeed{Found: len(parts) > 0, Parts: parts}
	marks := make([]logic.PartMark, 0, len(parts))
	for _, p := range parts {
		if !p.Found {
			out.Found = false
			continue
		}
		out.Seq += p.Seq
		marks = append(marks, logic.PartMark{Max: p.Watermark, LastArrival: p.LastArrival})
	}
	out.Watermark = logic.StreamMark(marks, defaults.PartitionIdle)
	return out
}

// Seqs names the position exactly: every partition's sequence, in
// partition order ("-" for a partition without a position). Two positions
// with equal Seqs hold the same speed state; cache keys use it.
func (s StreamSpeed) Seqs() string {
	b := make([]byte, 0, 8*len(s.Parts))
	for i, p := range s.Parts {
		if i > 0 {
			b = append(b, '.')
		}
		if !p.Found {
			b = append(b, '-')
			continue
		}
		b = strconv.AppendUint(b, p.Seq, 10)
	}
	return string(b)
}

// ViewSpeed is where one view's speed cells stand on its stream: they hold
// the records that arrived from epoch From on, up to Joined when the view
// takes part in the stream's commits (JoinedOK), else up to Rebuilt while
// a rebuild (which began at RebuildFirst) folds the log into it.
type ViewSpeed struct {
	JoinedOK     bool
	Joined       uint64
	From         int64
	Rebuilding   bool
	Rebuilt      uint64
	RebuildFirst uint64
}

// SpeedStatus reports the speed layer's progress on a stream.
//
// StreamStatus returns the committed position of each of the stream's
// partitions, combined by SpeedOf (a partition without one is not Found).
// It must be safe for concurrent use. (*speedstore.Store).Position of
// each partition maps onto a PartSpeed (found=false -> zero value).
type SpeedStatus interface {
	StreamStatus(ctx context.Context, stream string) (StreamSpeed, error)
}

// CommitNotice announces a commit of the speed layer: the stream, the
// partition and its new position (the partition's log sequence).
type CommitNotice struct {
	Stream string
	Part   int
	Seq    uint64
}

// CommitNotifier delivers the speed layer's commit notices. Subscribe is
// called once per process; the channel is closed when ctx ends. Notices may
// be lost (e.g. while reconnecting): live clients still see the next one,
// and the batch-version check runs on its own. The cmd/braid adapter
// subscribes to the speed store's commit channel of every partition of
// every stream (speedstore.Store.SubscribeCommits).
type CommitNotifier interface {
	Subscribe(ctx context.Context) <-chan CommitNotice
}

// BatchViews is the batch layer's published versions and their rows, as
// the engine reads them. (*batchviews.Store) satisfies it.
//
// Current returns the version being served (nil when no run has published
// one yet); once a version is published, Current never returns an older
// one. Rows returns the rows of view v in ver whose window starts in
// [fromMs, toMs) (0, 0: all), refusing (with an error) a view whose rows
// in ver were computed for another definition than v's; the rows returned
// are shared and must not be changed. KeepOnly lets the store drop what it
// holds in memory for versions other than ver; LoadedRows is how many rows
// it holds. All are safe for concurrent use; an error from Current or Rows
// fails the answer being computed (the rows may be unreadable for now).
type BatchViews interface {
	Current() (*batchviews.Version, error)
	Rows(ctx context.Context, ver *batchviews.Version, v *logic.View, fromMs, toMs int64) ([]batchviews.Row, error)
	KeepOnly(ver *batchviews.Version)
	LoadedRows() int64
}
