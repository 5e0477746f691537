package eventlog

// PackRecords encodes recs as one log record (for tests that write a log
// the way an earlier version did).
func PackRecords(recs []Record) []byte { return appendPacked(nil, recs) }
