package logic

import (
	"time"

	"github.com/braid-data/braid/logic/defaults"
)

// WatermarkLead is how far past an event's arrival (the time the log stored
// it) the stream's watermark may move: max_future when the stream sets it,
// else defaults.WatermarkLead. An event stamped in the far future (a bad
// clock, 9999-12-31) is still accepted and folded, but it moves the
// watermark at most this far past its arrival, so it cannot make every
// later event too late.
func (s *Stream) WatermarkLead() time.Duration {
	if s.MaxFuture > 0 {
		return s.MaxFuture
	}
	return defaults.WatermarkLead
}

// Watermark tracks the largest event time a stream has seen. Windows that
// end before Max - lateness are final; events older than that are too late
// for the speed layer (the batch layer still counts them).
type Watermark struct {
	Max int64 // largest event time seen, at most lead past its arrival, unix ms; 0 before any event
}

// Observe moves the watermark forward with an event's time t, but never
// past its arrival (unix ms, the log's timestamp) plus lead:
// Max = max(Max, min(t, arrival + lead)). It depends only on the event and
// its place in the log, never on the clock, so a rebuild that folds the log
// again moves the watermark the same way.
func (w *Watermark) Observe(t, arrival int64, lead time.Duration) {
	t = min(t, arrival+lead.Milliseconds())
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
