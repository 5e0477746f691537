package query

import "errors"

// Errors callers branch on (errors.Is). Besides them, a view that cannot
// answer yet is a *RebuildingError and an answer beyond its budget a
// *TooLargeError (errors.As).
var (
	// ErrUnavailable: a store the answer needs cannot be read now (the
	// batch versions, the speed position or its cells); asking again later
	// may succeed.
	ErrUnavailable = errors.New("unavailable")
	// ErrStateShape: a batch row or speed cell has a state whose length does
	// not match the view's slots (a store written by another configuration).
	ErrStateShape = errors.New("serving: state has the wrong number of slots")
)
