package ingest

import "errors"

// ErrUnknownStream: the stream is not declared in the catalog.
var ErrUnknownStream = errors.New("ingest: unknown stream")

// ErrFeatures: the entity features of a decision could not be read
// (Features failed): nothing of the request is stored.
var ErrFeatures = errors.New("ingest: entity features unavailable")
