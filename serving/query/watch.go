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
	Rows    []ResultRow // shared with the answer cache: not to be changed
}

// Rows answers q over v as rows (q.Format is ignored), through the answer
// cache and the computations shared by queries asking at once. Errors as
// Answer's.
func (e *Engine) Rows(ctx context.Context, v *logic.View, q Query) (RowsAnswer, error) {
	in, err := e.readInputs(ctx, v)
	if err != nil {
		return RowsAnswer{}, err
	}
	q.Format = "json"
	ca, err := e.lookupWith(ctx, v, q, in)
	if err != nil {
		return RowsAnswer{}, err
	}
	out := RowsAnswer{Version: ca.a.Version, Cutoff: ca.a.Cutoff, Watermark: ca.a.Watermark, Rows: ca.a.Rows}
	for _, p := range in.pos.Parts {
		out.Arrival = max(out.Arrival, p.LastArrival)
	}
	return out, nil
}
