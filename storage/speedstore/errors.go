package speedstore

import "errors"

// ErrConflict means the stored position was not the one a Commit expected:
// the micro-batch was already committed (a redelivery), another process
// moved the position, or Redis lost the state (position absent while the
// writer expected one). Nothing was written; the writer drops its batch and
// re-reads Position.
var ErrConflict = errors.New("speedstore: position conflict")

// ErrJoined is returned by BeginRebuild for a view that has joined its
// stream's commits already: there is nothing to rebuild.
var ErrJoined = errors.New("speedstore: view already joined")

// ErrNoPosition is returned by BeginRebuild when the stream has no position
// (a fresh start: its first commit joins every view).
var ErrNoPosition = errors.New("speedstore: stream has no position")
