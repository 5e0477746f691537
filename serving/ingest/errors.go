package ingest

import "errors"

// ErrUnknownStream: the stream is not declared in the catalog.
var ErrUnknownStream = errors.New("ingest: unknown stream")

// ErrFeatures: the entity features of a decision could not be read
// (Features failed): no event of the request is stored (its dead letters
// may be: a retry stores them once).
var ErrFeatures = errors.New("ingest: entity features unavailable")
