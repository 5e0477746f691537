// Package logic is the one definition of what Braid's events mean and what
// every view computes. The speed layer folds events with it incrementally; the
// batch layer runs the SQL it renders in DuckDB. Nothing here does I/O.
//
// The pieces, in the order an event meets them:
//
//   - Stream: the schema of one event stream. Prepare parses a raw JSON event,
//     checks types and required fields, reads the event time, masks PII and
//     returns the Event plus the canonical record that goes into the log.
//     Decode reads such a record back (consumers trust it).
//   - Window: tumbling or hopping windows aligned to UTC.
//   - Measure: a mergeable aggregate. Its state is a fixed number of numeric
//     slots; each slot kind has an identity, an incremental update, a merge and
//     the SQL aggregate that computes the same slot in DuckDB. count_distinct
//     and quantile keep sketches instead, last and first a pick (pick.go).
//   - View: stream + window + dimensions + measures. Fold adds an event to an
//     in-memory Delta; SQL renders the batch computation over the lake.
package logic
