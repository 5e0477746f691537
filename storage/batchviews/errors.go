package batchviews

import "errors"

// Errors callers branch on.
var (
	ErrNoView      = errors.New("batchviews: view not in the version")
	ErrMissingMeta = errors.New("batchviews: version metadata missing")
)
