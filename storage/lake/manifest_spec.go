package lake

// The lake's manifest API, as the batch layer and the archiver will use it
// once the lake stands on an object store. The types are final; the
// methods below are placeholders until that implementation lands and
// replaces this file.

import (
	"context"
	"errors"
	"time"

	"github.com/braid-data/braid/logic"
)

// ErrConflict: another writer committed the generation this commit was
// built on; nothing of this commit is visible.
var ErrConflict = errors.New("lake: another writer committed first")

// errNotYet is returned by the placeholders below.
var errNotYet = errors.New("lake: manifests are not available in this build")

// FileInfo describes a committed lake file, as its stream's manifest lists it.
type FileInfo struct {
	Key        string `json:"key"`         // object key in the lake's store
	Date       string `json:"date"`        // event date (UTC), YYYY-MM-DD
	First      uint64 `json:"first"`       // first log sequence it holds
	Last       uint64 `json:"last"`        // last log sequence it holds
	Rows       int64  `json:"rows"`        // rows (events)
	Bytes      int64  `json:"bytes"`       // object size
	MinArrival int64  `json:"min_arrival"` // unix ms, of the rows' arrival
	MaxArrival int64  `json:"max_arrival"` // unix ms: a partition received events since C iff a file has MaxArrival >= C
	MinTime    int64  `json:"min_time"`    // event time, unix ms
	MaxTime    int64  `json:"max_time"`
}

// Removed is a file compaction or retention took out of the lake; it is
// deleted once it has been out for the lake's grace period (readers that
// hold an older manifest can still read it until then).
type Removed struct {
	Key     string    `json:"key"`
	Removed time.Time `json:"removed"`
}

// Manifest is a stream's committed state: generation Gen, the checkpoint,
// the committed files (by First), the schema epochs, and the files removed
// but not yet deleted.
type Manifest struct {
	Gen        uint64     `json:"gen"`
	Checkpoint Checkpoint `json:"checkpoint"`
	Files      []FileInfo `json:"files"`
	Epochs     []Epoch    `json:"epochs"`
	Garbage    []Removed  `json:"garbage,omitempty"`
}

// CompactStats is what one Compact did.
type CompactStats struct {
	Partitions int   // partitions compacted
	FilesIn    int   // files merged
	FilesOut   int   // files written
	Bytes      int64 // bytes written
}

// Manifest returns a stream's current manifest (Gen 0: none yet).
func (l *Lake) Manifest(ctx context.Context, stream string) (Manifest, error) {
	return Manifest{}, errNotYet
}

// Local returns local paths of the objects under keys, which DuckDB reads,
// kept until release is called.
func (l *Lake) Local(ctx context.Context, keys []string) (paths []string, release func(), err error) {
	return nil, func() {}, errNotYet
}

// Compact merges a stream's small files, per date partition, into files of
// about targetBytes, replacing them in one commit.
func (l *Lake) Compact(ctx context.Context, s *logic.Stream, targetBytes int64) (CompactStats, error) {
	return CompactStats{}, errNotYet
}

// DropBefore removes the partitions dated before date (YYYY-MM-DD) in one
// commit and returns how many files went.
func (l *Lake) DropBefore(ctx context.Context, stream, date string) (int, error) {
	return 0, errNotYet
}

// Sweep deletes the removed files whose grace period is over.
func (l *Lake) Sweep(ctx context.Context, stream string) (int, error) {
	return 0, errNotYet
}
