package logic

import (
	"errors"
	"fmt"
)

// RejectError says why an event was refused. Every rejected event goes to the
// dead-letter queue with this reason; Field is empty when the whole event is
// at fault (e.g. invalid JSON).
type RejectError struct {
	Field  string
	Reason string
}

func (e *RejectError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return fmt.Sprintf("field %q: %s", e.Field, e.Reason)
}

func reject(field, format string, args ...any) *RejectError {
	return &RejectError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// IsReject reports whether err is an event rejection (as opposed to a fault).
func IsReject(err error) bool {
	var r *RejectError
	return errors.As(err, &r)
}

// ErrTooLate marks an event older than its stream's allowed lateness behind
// the watermark: the speed layer skips it; the batch layer counts it.
var ErrTooLate = errors.New("event is later than the allowed lateness")
