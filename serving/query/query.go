// Package query is Braid's query engine: a view's answer from its inputs
// (the current batch version and the speed layer's position), the merge of
// batch rows and speed cells (merge.go, a pure function), the query cache
// of answers and of final windows' encoded rows (cache.go, buckets.go),
// computations shared by the queries that ask at once (flight.go), the
// budget of one answer (budget.go), the decision whether a view can answer
// (viewstate.go), the JSON, CSV and Arrow encoders, and the live queries
// recomputed once per change for all their clients (live.go). It knows
// nothing of HTTP: serving parses parameters into a Query and writes the
// Body the engine returns. The stores it reads are reached through the
// small interfaces it declares (interfaces.go).
package query

// Query is a parsed view query.
type Query struct {
	Rollup
	StepText string   // as the answer echoes it: the given step, or the view's
	GroupBy  []string // kept dimension names, in output order
	Format   string   // json | csv | arrow
	Order    int      // measure index to order by, -1 = none
	Desc     bool
	Limit    int // 0 = all
}
