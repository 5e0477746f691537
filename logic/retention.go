package logic

import "time"

// RetainedFrom is the first event date (UTC, YYYY-MM-DD) a stream with
// the given retention keeps at now: the date of now - retention. The lake
// drops its partitions dated before it and batch runs drop their rows of
// windows dated before it, so both keep the same whole days. It is ""
// when retention is 0 or less (forever).
func RetainedFrom(retention time.Duration, now time.Time) string {
	if retention <= 0 {
		return ""
	}
	return now.Add(-retention).UTC().Format(time.DateOnly)
}
