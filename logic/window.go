package logic

import (
	"fmt"
	"time"
)

// Window is a tumbling (Hop == 0) or hopping window aligned to the UTC epoch.
type Window struct {
	Size time.Duration
	Hop  time.Duration // 0: tumbling
}

// Limits on window lengths.
const (
	MinWindow = time.Second
	MaxWindow = 24 * time.Hour
)

// Validate checks the window's lengths.
func (w Window) Validate() error {
	if w.Size < MinWindow || w.Size > MaxWindow {
		return fmt.Errorf("window %s is outside %s..%s", w.Size, MinWindow, MaxWindow)
	}
	if w.Size%time.Second != 0 {
		return fmt.Errorf("window %s is not a whole number of seconds", w.Size)
	}
	if w.Hop != 0 {
		if w.Hop < MinWindow || w.Hop > w.Size || w.Size%w.Hop != 0 {
			return fmt.Errorf("hop %s must divide the window %s and be at least %s", w.Hop, w.Size, MinWindow)
		}
	}
	return nil
}

// Step is the distance between two window starts.
func (w Window) Step() time.Duration {
	if w.Hop == 0 {
		return w.Size
	}
	return w.Hop
}

// Starts appends to dst the starts (unix ms) of every window containing t.
func (w Window) Starts(dst []int64, t int64) []int64 {
	size := w.Size.Milliseconds()
	if w.Hop == 0 || w.Hop == w.Size {
		return append(dst, floorDiv(t, size)*size)
	}
	hop := w.Hop.Milliseconds()
	for s := floorDiv(t-size, hop)*hop + hop; s <= t; s += hop {
		dst = append(dst, s)
	}
	return dst
}

// StartSQL renders, for a BIGINT millisecond column, the expression of the
// window start (tumbling) or a list of window starts to unnest (hopping).
func (w Window) StartSQL(col string) string {
	size := w.Size.Milliseconds()
	if w.Hop == 0 || w.Hop == w.Size {
		return fmt.Sprintf("(CAST(floor(%s / %d) AS BIGINT) * %d)", col, size, size)
	}
	hop := w.Hop.Milliseconds()
	return fmt.Sprintf("unnest(range(CAST(floor((%[1]s - %[2]d) / %[3]d) AS BIGINT) * %[3]d + %[3]d, %[1]s + 1, %[3]d))", col, size, hop)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// EpochOf returns the arrival epoch (its start, unix ms) of an arrival time.
func EpochOf(arrivalMs int64, epoch time.Duration) int64 {
	e := epoch.Milliseconds()
	return floorDiv(arrivalMs, e) * e
}
