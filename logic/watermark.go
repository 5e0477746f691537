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

// PartMark is what one partition of a stream tells about its watermark:
// the largest event time it has folded (Watermark.Max; 0: none yet) and
// the arrival (unix ms, the log's timestamp) of the last record it folded.
type PartMark struct {
	Max         int64
	LastArrival int64
}

// StreamMark is a partitioned stream's watermark (a Watermark.Max): the
// smallest over its partitions that have seen data, so a window is final
// only once every partition has moved past it. A partition whose last
// record arrived more than idle before the latest arrival of any
// partition (defaults.PartitionIdle: it has been quiet while others took
// events) does not hold the stream back; when every partition with data
// is that quiet the smallest of them counts. An event that later comes
// to an idle partition is judged against that partition's own watermark
// (so it is not lost), and may land in a window the stream already
// called final: the batch layer's next run makes the window exact. 0 when
// no partition has seen data.
func StreamMark(parts []PartMark, idle time.Duration) int64 {
	var latest int64
	for _, p := range parts {
		if p.Max > 0 {
			latest = max(latest, p.LastArrival)
		}
	}
	var mark, quiet int64
	for _, p := range parts {
		switch {
		case p.Max == 0:
		case p.LastArrival >= latest-idle.Milliseconds():
			if mark == 0 || p.Max < mark {
				mark = p.Max
			}
		case quiet == 0 || p.Max < quiet:
			quiet = p.Max
		}
	}
	if mark == 0 {
		return quiet
	}
	return mark
}
