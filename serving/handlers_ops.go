package serving

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
)

// handleStatus: GET /v1/status (status.go). A failing part is reported in
// place; the answer is 200 as long as the server runs.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.status(r.Context(), time.Now()))
}

// handleBatchStart: POST /v1/batch/runs[?wait=true] body {"views": [...]}.
func (s *Server) handleBatchStart(w http.ResponseWriter, r *http.Request) {
	if s.opts.Runner == nil {
		writeError(w, http.StatusServiceUnavailable, "batch runner unavailable", "this process does not run batch jobs")
		return
	}
	var req struct {
		Views []string `json:"views"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body too large", nil)
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "bad body", `want {"views": ["name", ...]}: `+err.Error())
			return
		}
	}
	for _, v := range req.Views {
		if s.opts.Catalog.Views[v] == nil {
			writeError(w, http.StatusBadRequest, "unknown view", v)
			return
		}
	}
	wait, _ := strconv.ParseBool(r.URL.Query().Get("wait"))
	if wait {
		run, err := s.opts.Runner.Run(r.Context(), req.Views)
		if err != nil && run.ID == "" {
			writeError(w, http.StatusInternalServerError, "batch run failed", err.Error())
			return
		}
		writeJSON(w, http.StatusOK, run)
		return
	}
	id, err := s.opts.Runner.Start(req.Views)
	if err != nil {
		if errors.Is(err, ErrBatchBusy) || (s.opts.RunnerBusy != nil && errors.Is(err, s.opts.RunnerBusy)) {
			writeError(w, http.StatusConflict, "a batch run is in progress", err.Error())
			return
		}
		writeError(w, http.StatusInternalServerError, "start batch run", err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
}

// handleBatchRuns: GET /v1/batch/runs[?limit=N], newest first.
func (s *Server) handleBatchRuns(w http.ResponseWriter, r *http.Request) {
	if s.opts.Views == nil {
		writeError(w, http.StatusServiceUnavailable, "batch views unavailable", nil)
		return
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "bad parameter limit", "want a positive integer")
			return
		}
		limit = n
	}
	runs, err := s.opts.Views.Runs()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "list runs", err.Error())
		return
	}
	if runs == nil {
		runs = []batchviews.Run{}
	}
	if len(runs) > limit {
		runs = runs[:limit]
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
}

// handleBatchRun: GET /v1/batch/runs/{id}.
func (s *Server) handleBatchRun(w http.ResponseWriter, r *http.Request) {
	if s.opts.Views == nil {
		writeError(w, http.StatusServiceUnavailable, "batch views unavailable", nil)
		return
	}
	id := chi.URLParam(r, "id")
	run, ok, err := s.opts.Views.Run(id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read run", err.Error())
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "unknown run", id)
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// handleDLQ: GET /v1/dlq/{stream}?after=SEQ[:INDEX]&limit=N. A letter is
// addressed by its record's sequence and its index in the record; the
// answer's next is the after of the following page.
func (s *Server) handleDLQ(w http.ResponseWriter, r *http.Request) {
	stream := chi.URLParam(r, "stream")
	if s.opts.Catalog.Streams[stream] == nil {
		writeError(w, http.StatusNotFound, "unknown stream", stream)
		return
	}
	if s.opts.Log == nil {
		writeError(w, http.StatusServiceUnavailable, "event log unavailable", nil)
		return
	}
	after, limit, ok := pageParams(w, r)
	if !ok {
		return
	}
	dls, err := s.opts.Log.DeadLetters(r.Context(), stream, after, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "read dead letters", err.Error())
		return
	}
	out := map[string]any{"stream": stream, "events": dls}
	if len(dls) == 0 {
		out["events"] = []eventlog.DeadLetter{}
	} else {
		out["next"] = dls[len(dls)-1].Cursor().String()
	}
	writeJSON(w, http.StatusOK, out)
}

// handleDLQReplay: POST /v1/dlq/{stream}/replay.
func (s *Server) handleDLQReplay(w http.ResponseWriter, r *http.Request) {
	stream := chi.URLParam(r, "stream")
	st := s.opts.Catalog.Streams[stream]
	if st == nil {
		writeError(w, http.StatusNotFound, "unknown stream", stream)
		return
	}
	if s.opts.Log == nil {
		writeError(w, http.StatusServiceUnavailable, "event log unavailable", nil)
		return
	}
	res, err := s.ingester.ReplayDeadLetters(r.Context(), stream, "replay")
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "replay dead letters", map[string]any{"error": err.Error(), "replayed": res.Replayed, "kept": res.Kept, "unreplayable": res.Unreplayable})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// pageParams reads the page of a listing by cursor (dead letters, blocked
// and review events): after=SEQ[:INDEX] and limit (1..10000, default
// 100). ok is false when a 400 was written.
func pageParams(w http.ResponseWriter, r *http.Request) (after eventlog.Cursor, limit int, ok bool) {
	q := r.URL.Query()
	if a := q.Get("after"); a != "" {
		c, err := eventlog.ParseCursor(a)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad parameter after", "want SEQ:INDEX (an event's seq and index, or the answer's next) or SEQ")
			return eventlog.Cursor{}, 0, false
		}
		after = c
	}
	limit = 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "bad parameter limit", "want an integer in 1..10000")
			return eventlog.Cursor{}, 0, false
		}
		limit = n
	}
	return after, limit, true
}
