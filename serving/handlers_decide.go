package serving

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
)

// handleBlocked: GET /v1/streams/{stream}/blocked?outcome=block|review&after=SEQ[:INDEX]&limit=N.
// The events the stream's rules held back at ingest (decide=true):
// blocked ones (the default), or those kept for review (also stored in
// the clean log), oldest first, each with the rules that matched. Paged
// like the dead-letter queue: an event is addressed by its record's
// sequence and its index in the record; the answer's next is the after of
// the following page. Admin, like the dead letters: the events hold the
// producers' data.
func (s *Server) handleBlocked(w http.ResponseWriter, r *http.Request) {
	stream := chi.URLParam(r, "stream")
	if s.opts.Catalog.Streams[stream] == nil {
		writeError(w, http.StatusNotFound, "unknown stream", stream)
		return
	}
	o := logic.Block
	if q := r.URL.Query().Get("outcome"); q != "" {
		var err error
		if o, err = logic.ParseOutcome(q); err != nil || o == logic.Allow {
			writeError(w, http.StatusBadRequest, "bad parameter outcome", "want block or review (allowed events are only in the clean log)")
			return
		}
	}
	if s.opts.Log == nil {
		writeError(w, http.StatusServiceUnavailable, "event log unavailable", nil)
		return
	}
	after, limit, ok := pageParams(w, r)
	if !ok {
		return
	}
	ds, err := s.opts.Log.DecidedEvents(r.Context(), stream, o, after, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "read "+o.String()+" events", err.Error())
		return
	}
	out := map[string]any{"stream": stream, "outcome": o.String(), "events": ds}
	if len(ds) == 0 {
		out["events"] = []eventlog.Decided{}
	} else {
		out["next"] = ds[len(ds)-1].Cursor().String()
	}
	writeJSON(w, http.StatusOK, out)
}
