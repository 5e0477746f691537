package serving

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
)

// Auditor recomputes a view's speed-layer windows exactly from the lake
// and reports each measure's drift against its bound (batch.Audit, wired
// with the lake, the speed store, the view's batch cutoff and the stream's
// too-late records).
//
// Audit covers the windows starting in [fromMs, toMs). It returns the
// report (non-nil when err is nil), answered as its JSON; an error
// matching ErrAuditNotReady means the lake has not yet archived up to the
// speed layer's position (answered 503 with Retry-After); any other error
// fails the audit (500). Safe for concurrent use.
type Auditor interface {
	Audit(ctx context.Context, v *logic.View, fromMs, toMs int64) (AuditReport, error)
}

// AuditReport is an audit's report: the body of the answer is its JSON
// (*batch.AuditReport, with its windows and each measure's drift and
// bound).
type AuditReport interface {
	json.Marshaler
}

// ErrAuditNotReady: an audit must wait for the archiver to catch up.
var ErrAuditNotReady = errors.New("serving: the lake is behind the speed layer")

// handleAudit: GET /v1/views/{view}/audit[?from=T&to=T].
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "view")
	v := s.opts.Catalog.Views[name]
	if v == nil {
		writeError(w, http.StatusNotFound, "unknown view", name)
		return
	}
	if v.Tier != logic.TierLive {
		writeError(w, http.StatusConflict, "a batch-tier view keeps no speed state to audit", "its answers come from the batch layer alone, exact as of the batch cutoff")
		return
	}
	if s.opts.Auditor == nil {
		writeError(w, http.StatusNotImplemented, "audits need the lake and the speed store in this process", nil)
		return
	}
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	q := r.URL.Query()
	var err error
	if q.Get("from") != "" {
		if from, err = parseTime(q, "from"); err != nil {
			writeError(w, http.StatusBadRequest, "bad query parameter", err.Error())
			return
		}
	}
	if q.Get("to") != "" {
		if to, err = parseTime(q, "to"); err != nil {
			writeError(w, http.StatusBadRequest, "bad query parameter", err.Error())
			return
		}
	}
	if from >= to {
		writeError(w, http.StatusBadRequest, "bad query parameter", "from: must be before to")
		return
	}
	if err := s.engine.Ready(r.Context(), v); err != nil {
		var re *query.RebuildingError
		if errors.As(err, &re) {
			s.queryError(w, v.Name, err)
			return
		}
	}
	rep, err := s.opts.Auditor.Audit(r.Context(), v, from, to)
	switch {
	case errors.Is(err, ErrAuditNotReady):
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, "the lake is behind the speed layer; retry shortly", err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, "audit failed", err.Error())
	default:
		writeJSON(w, http.StatusOK, rep)
	}
}
