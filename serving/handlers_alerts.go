package serving

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/serving/alerts"
)

// handleAlerts: GET /v1/alerts — every alert with its definition, the
// rows firing now, its recent deliveries and its dead-letter count.
func (s *Server) handleAlerts(w http.ResponseWriter, r *http.Request) {
	if s.opts.Alerts == nil {
		if len(s.opts.Catalog.AlertOrder) > 0 {
			writeError(w, http.StatusServiceUnavailable, "alerts unavailable", "this process does not run the alerts")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"alerts": []alerts.Status{}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"alerts": s.opts.Alerts.List(r.Context())})
}

// handleAlertDLQ: GET /v1/alerts/{alert}/dlq[?limit=N] — the alert's dead
// letters, oldest first.
func (s *Server) handleAlertDLQ(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "alert")
	if !s.alertKnown(w, name) {
		return
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "bad parameter limit", "want an integer in 1..10000")
			return
		}
		limit = n
	}
	dls, err := s.opts.Alerts.DeadLetters(r.Context(), name, limit)
	if err != nil {
		s.alertError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"alert": name, "dead_letters": dls})
}

// handleAlertReplay: POST /v1/alerts/{alert}/dlq/replay — deliver the
// alert's dead letters again, with their ids.
func (s *Server) handleAlertReplay(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "alert")
	if !s.alertKnown(w, name) {
		return
	}
	n, err := s.opts.Alerts.Replay(r.Context(), name)
	if err != nil {
		s.alertError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"alert": name, "replayed": n})
}

// alertKnown answers 404 for an alert the catalog lacks and 503 when the
// alerts do not run here.
func (s *Server) alertKnown(w http.ResponseWriter, name string) bool {
	if s.opts.Catalog.Alerts[name] == nil {
		writeError(w, http.StatusNotFound, "unknown alert", name)
		return false
	}
	if s.opts.Alerts == nil {
		writeError(w, http.StatusServiceUnavailable, "alerts unavailable", "this process does not run the alerts")
		return false
	}
	return true
}

func (s *Server) alertError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, alerts.ErrUnknownAlert):
		writeError(w, http.StatusNotFound, "unknown alert", err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, "alert dead letters unavailable", err.Error())
	}
}
