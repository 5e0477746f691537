package query

import (
	"context"

	"github.com/braid-data/braid/logic"
)

// Watch returns a channel that receives a value whenever the answers of
// the views of stream may have changed: a commit of the stream was
// noticed (or, without a notifier, its polled position moved), or a new
// batch version was published. Values coalesce (the channel holds one):
// a reader that was busy finds one value for any number of changes.
// stop ends the watch (once; the channel is not closed). Watches share
// the process's one commit subscription with the live queries.
func (e *Engine) Watch(stream string) (changes <-chan struct{}, stop func()) {
	return e.hub.watch(stream)
}

// RowsAnswer is a view's answer as rows, for a consumer that reads the
// values themselves (alerts): the rows, sorted by window then group, with
// the inputs they were computed at.
type RowsAnswer struct {
	Version   string // the batch version ("": none)
	Cutoff    int64  // its cutoff, unix ms (0: no batch)
	Watermark int64  // the stream's watermark, unix ms (0: unknown)
	// Arrival is the latest arrival (the log's timestamp, unix ms) of the
	// records the speed state holds (over the partitions; 0: unknown):
	// when the newest event in the answer was acknowledged.
	Arrival int64
	Rows    []ResultRow
}

// Rows answers q over v as rows (q.Format is ignored), within the
// engine's budget. It is computed afresh and not kept in the answer
// cache: its caller asks again at every commit, each time at a new
// position, and would only push the queries' answers out. Errors as
// Answer's.
func (e *Engine) Rows(ctx context.Context, v *logic.View, q Query) (RowsAnswer, error) {
	in, err := e.readInputs(ctx, v)
	if err != nil {
		return RowsAnswer{}, err
	}
	a, err := e.compute(ctx, v, q, in, e.newBudget(v.Name))
	if err != nil {
		return RowsAnswer{}, err
	}
	out := RowsAnswer{Version: a.Version, Cutoff: a.Cutoff, Watermark: a.Watermark, Rows: a.Rows}
	for _, p := range in.pos.Parts {
		out.Arrival = max(out.Arrival, p.LastArrival)
	}
	return out, nil
}
