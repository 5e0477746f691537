package ingest

import "errors"

// ErrUnknownStream: the stream is not declared in the catalog.
var ErrUnknownStream = errors.New("ingest: unknown stream")
