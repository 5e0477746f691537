package speedstore

import "errors"

// ErrConflict means the stored position was not the one a Commit expected:
// the micro-batch was already committed (a redelivery), another process
// moved the position, or Redis lost the state (position absent while the
// writer expected one). Nothing was written; the writer drops its batch and
// re-reads Position.
var ErrConflict = errors.New("speedstore: position conflict")
