package batchviews

// The parts API, as batch runs will use it once versions are made of one
// part per view and window-start date. The types are final; the methods
// below are placeholders until that implementation lands and replaces
// this file.

import (
	"context"
	"errors"

	"github.com/braid-data/braid/logic"
)

// ErrConflict: another publisher made a version current on the same base;
// nothing of this publish is current.
var ErrConflict = errors.New("batchviews: another run published first")

var errNotYet = errors.New("batchviews: parts are not available in this build")

// Part is the rows of one view whose window start falls on one UTC date.
type Part struct {
	Date   string `json:"date"`   // window-start date, UTC, YYYY-MM-DD
	Key    string `json:"key"`    // object key ("" for no rows)
	Rows   int    `json:"rows"`   // rows (window and group cells)
	Run    string `json:"run"`    // the run that computed it (a reused part keeps its run)
	Cutoff int64  `json:"cutoff"` // the cutoff it was computed with (unix ms)
}

// RunLock is the run lock shared by every process that may run batch runs.
//
// Lock takes it without waiting and returns the function that releases it;
// ErrLocked while another holder (in this process or any other) has it. A
// holder that dies loses it (at once or after a lease expires), so a run
// recorded as running whose lock is free was interrupted.
type RunLock interface {
	Lock() (unlock func(), err error)
}

// WritePart stores the rows of view v whose window start falls on date
// (YYYY-MM-DD), computed by run; no rows gives a Part without an object.
func (s *Store) WritePart(ctx context.Context, v *logic.View, date, run string, rows []Row) (Part, error) {
	return Part{}, errNotYet
}

// PublishParts makes ver (whose views hold their parts) current on top of
// base (nil: the first version); ErrConflict when another publish did.
func (s *Store) PublishParts(ctx context.Context, base, ver *Version) error {
	return errNotYet
}
