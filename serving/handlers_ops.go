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

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
)

const unavailable = "unavailable"

func timeOrNil(ms int64) any {
	if ms <= 0 {
		return nil
	}
	return logic.FormatTime(ms)
}

func errPart(err error) map[string]any {
	return map[string]any{"status": "error", "error": err.Error()}
}

// handleStatus: GET /v1/status. A failing part is reported in place; the
// answer is 200 as long as the server runs.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := time.Now()
	cat := s.opts.Catalog
	streams := map[string]any{}
	maxEvent := map[string]int64{}              // speed layer's largest event time per stream
	positions := map[string]query.StreamSpeed{} // the speed layer's positions
	for _, name := range cat.StreamOrder {
		st := cat.Streams[name]
		// accepted and rejected are what the log holds, the same in every
		// process: events stored in the clean log (each once) and dead
		// letters stored.
		out := map[string]any{"accepted": nil, "rejected": nil}
		var lastSeq uint64
		haveLog := false
		if l := s.opts.Log; l != nil {
			if n, err := l.EventCount(ctx, name); err == nil {
				out["accepted"] = n
			} else {
				out["accepted_error"] = err.Error()
			}
			if n, err := l.DeadLetterCount(ctx, name); err == nil {
				out["rejected"], out["dead_letters"] = n, n
			} else {
				out["dead_letters"] = nil
				out["rejected_error"], out["dead_letters_error"] = err.Error(), err.Error()
			}
			if n, err := l.LateCount(ctx, name); err == nil {
				out["late"] = n
			} else {
				out["late"] = nil
				out["late_error"] = err.Error()
			}
			if info, err := l.Info(ctx, name); err == nil {
				lastSeq, haveLog = info.LastSeq, true
				lg := map[string]any{"first_seq": info.FirstSeq, "last_seq": info.LastSeq, "msgs": info.Msgs, "last_time": nil}
				if !info.LastTime.IsZero() {
					lg["last_time"] = info.LastTime.UTC().Format(time.RFC3339Nano)
				}
				out["log"] = lg
			} else {
				out["log"] = errPart(err)
			}
		} else {
			out["log"] = map[string]any{"status": unavailable}
		}
		if ss := s.opts.SpeedStatus; ss != nil {
			if pos, err := ss.StreamStatus(ctx, name); err == nil {
				maxEvent[name], positions[name] = pos.Watermark, pos
				sp := map[string]any{"seq": pos.Seq, "max_event_time": timeOrNil(pos.Watermark),
					"watermark": timeOrNil(logic.Watermark{Max: pos.Watermark}.At(st.AllowedLateness)), "lag": nil}
				if haveLog {
					sp["lag"] = lag(lastSeq, pos.Seq)
				}
				out["speed"] = sp
			} else {
				out["speed"] = errPart(err)
			}
		} else {
			out["speed"] = map[string]any{"status": unavailable}
		}
		if as := s.opts.Archive; as != nil {
			if cp, err := as.ArchiveCheckpoint(ctx, name); err == nil {
				ar := map[string]any{"seq": cp.Seq, "covered_until": timeOrNil(cp.CoveredUntil), "lag": nil}
				if haveLog {
					ar["lag"] = lag(lastSeq, cp.Seq)
				}
				out["archive"] = ar
			} else {
				out["archive"] = errPart(err)
			}
		} else {
			out["archive"] = map[string]any{"status": unavailable}
		}
		streams[name] = out
	}
	var ver *batchviews.Version
	batch := map[string]any{}
	if vs := s.opts.Views; vs != nil {
		var err error
		if ver, err = vs.Current(); err != nil {
			batch = errPart(err)
		} else {
			batch["version"], batch["created"] = nil, nil
			cutoffs := map[string]any{}
			for _, vn := range cat.ViewOrder {
				cutoffs[vn] = nil
			}
			if ver != nil {
				batch["version"], batch["created"] = ver.ID, ver.Created
				for vn, vv := range ver.Views {
					if _, ok := cutoffs[vn]; ok {
						cutoffs[vn] = timeOrNil(vv.Cutoff)
					}
				}
			}
			batch["cutoffs"] = cutoffs
			batch["last_run"] = nil
			if runs, err := vs.Runs(); err != nil {
				batch["last_run_error"] = err.Error()
			} else if len(runs) > 0 {
				batch["last_run"] = runs[0]
			}
		}
	} else {
		batch["status"] = unavailable
	}
	views := map[string]any{}
	for _, vn := range cat.ViewOrder {
		v := cat.Views[vn]
		var cutoff int64
		if ver != nil && ver.Views[vn].Definition == v.Definition() {
			cutoff = ver.Views[vn].Cutoff
		}
		vo := map[string]any{"stream": v.Stream.Name, "definition": v.Definition(), "batch_cutoff": timeOrNil(cutoff), "freshness_ms": nil}
		if vs := s.engine.ViewState(v, ver, positions[v.Stream.Name]); vs.Ready {
			vo["state"], vo["progress"] = "ready", 1.0
		} else {
			vo["state"], vo["progress"] = "rebuilding", vs.Progress
		}
		if me := maxEvent[v.Stream.Name]; me > 0 {
			vo["freshness_ms"] = now.UnixMilli() - me
		} else if cutoff > 0 {
			vo["freshness_ms"] = now.UnixMilli() - cutoff
		}
		views[vn] = vo
	}
	writeJSON(w, http.StatusOK, map[string]any{"time": now.UTC().Format(time.RFC3339Nano), "uptime_s": int64(time.Since(s.started).Seconds()),
		"streams": streams, "batch": batch, "views": views})
}

func lag(last, at uint64) uint64 {
	if last > at {
		return last - at
	}
	return 0
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
	q := r.URL.Query()
	var after eventlog.Cursor
	if a := q.Get("after"); a != "" {
		c, err := eventlog.ParseCursor(a)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad parameter after", "want SEQ:INDEX (a letter's seq and index, or the answer's next) or SEQ")
			return
		}
		after = c
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "bad parameter limit", "want an integer in 1..10000")
			return
		}
		limit = n
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
