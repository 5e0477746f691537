package logic

import "time"

// Watermark tracks the largest event time a stream has seen. Windows that
// end before Max - lateness are final; events older than that are too late
// for the speed layer (the batch layer still counts them).
type Watermark struct {
	Max int64 // largest event time seen, unix ms; 0 before any event
}

// Observe moves the watermark forward with an event time.
func (w *Watermark) Observe(t int64) {
	if t > w.Max {
		w.Max = t
	}
}

// At returns the watermark itself: Max minus the allowed lateness.
func (w Watermark) At(lateness time.Duration) int64 {
	if w.Max == 0 {
		return 0
	}
	return w.Max - lateness.Milliseconds()
}

// TooLate reports whether an event with time t is behind the watermark.
func (w Watermark) TooLate(t int64, lateness time.Duration) bool {
	return w.Max != 0 && t < w.At(lateness)
}
