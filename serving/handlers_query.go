package serving

import (
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
)

// viewInfo describes a view for GET /v1/views.
type viewInfo struct {
	Name       string        `json:"name"`
	Definition string        `json:"definition"`
	Tier       string        `json:"tier"` // live | batch
	Stream     string        `json:"stream"`
	Window     string        `json:"window"`
	Hop        *string       `json:"hop"`
	Step       string        `json:"step"`
	Dims       []string      `json:"dims"`
	Where      string        `json:"where"`
	Measures   []measureInfo `json:"measures"`
	Exact      bool          `json:"exact"`
}

type measureInfo struct {
	Name  string  `json:"name"`
	Kind  string  `json:"kind"`
	Field string  `json:"field"`
	Q     float64 `json:"q"`
	Exact bool    `json:"exact"`
	Error string  `json:"error,omitempty"` // the sketch's error bound (logic.Measure.ErrorBound)
}

func (s *Server) handleViews(w http.ResponseWriter, r *http.Request) {
	out := make([]viewInfo, 0, len(s.opts.Catalog.ViewOrder))
	key := callerKey(r.Context())
	for _, name := range s.opts.Catalog.ViewOrder {
		if key != nil && !key.canRead(name) {
			continue // only the views this key may read
		}
		v := s.opts.Catalog.Views[name]
		vi := viewInfo{Name: name, Definition: v.Definition(), Tier: v.Tier.String(), Stream: v.Stream.Name, Window: fmtDuration(v.Window.Size.Milliseconds()),
			Step: fmtDuration(v.Window.Step().Milliseconds()), Dims: append([]string{}, v.Dims...), Where: v.Where, Exact: v.Exact()}
		if v.Window.Hop != 0 && v.Window.Hop != v.Window.Size {
			h := fmtDuration(v.Window.Hop.Milliseconds())
			vi.Hop = &h
		}
		for i := range v.Measures {
			m := &v.Measures[i]
			vi.Measures = append(vi.Measures, measureInfo{Name: m.Name, Kind: m.Kind.String(), Field: m.Field, Q: m.Q, Exact: m.Exact(), Error: m.ErrorBound()})
		}
		out = append(out, vi)
	}
	writeJSON(w, http.StatusOK, map[string]any{"views": out})
}

// DefinitionHeader carries the view's definition on every answer.
const DefinitionHeader = "Braid-View-Definition"

// TierHeader carries the view's latency tier (live, batch) on every
// answer: a batch-tier view answers from the batch layer alone.
const TierHeader = "Braid-View-Tier"

// WarningHeader carries each of an answer's warnings (JSON's "warnings"),
// one header line each, on every format.
const WarningHeader = "Braid-Warning"

// queryError answers a failed query.
func (s *Server) queryError(w http.ResponseWriter, name string, err error) {
	var te *query.TooLargeError
	if errors.As(err, &te) {
		writeTooLarge(w, te)
		return
	}
	var pe *ParamError
	if errors.As(err, &pe) {
		writeError(w, http.StatusBadRequest, "bad parameter "+pe.Param, pe.Msg)
		return
	}
	var re *query.RebuildingError
	if errors.As(err, &re) {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "view rebuilding", "detail": re.Error(), "progress": re.Progress})
		return
	}
	if errors.Is(err, query.ErrUnavailable) {
		s.logger.Warn("query failed", "view", name, "err", err)
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, "view unavailable", err.Error())
		return
	}
	s.logger.Error("query failed", "view", name, "err", err)
	writeError(w, http.StatusInternalServerError, "query failed", err.Error())
}

// parseViewQuery resolves the view and parses the query, answering the
// error itself (ok=false).
func (s *Server) parseViewQuery(w http.ResponseWriter, r *http.Request) (*logic.View, query.Query, bool) {
	name := chi.URLParam(r, "view")
	v := s.opts.Catalog.Views[name]
	if v == nil {
		writeError(w, http.StatusNotFound, "unknown view", name)
		return nil, query.Query{}, false
	}
	q, err := ParseQuery(v, r.URL.Query())
	if err != nil {
		var pe *ParamError
		if errors.As(err, &pe) {
			writeError(w, http.StatusBadRequest, "bad parameter "+pe.Param, pe.Msg)
			return nil, query.Query{}, false
		}
		writeError(w, http.StatusBadRequest, "bad query", err.Error())
		return nil, query.Query{}, false
	}
	return v, q, true
}

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	v, q, ok := s.parseViewQuery(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("format") == "" && acceptsArrow(r.Header.Get("Accept")) {
		q.Format = "arrow"
	}
	start := time.Now()
	body, err := s.engine.Answer(r.Context(), v, q)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client left: its computation stopped (or goes on for others)
		}
		s.queryError(w, v.Name, err)
		return
	}
	s.queryDur.WithLabelValues(v.Name).Observe(time.Since(start).Seconds())
	w.Header().Set(DefinitionHeader, v.Definition())
	w.Header().Set(TierHeader, v.Tier.String())
	for _, msg := range body.Warnings() {
		w.Header().Add(WarningHeader, msg)
	}
	w.Header().Set("Content-Type", contentTypes[q.Format])
	w.Header().Set("Content-Length", strconv.Itoa(body.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = body.WriteTo(w)
}

// writeTooLarge answers 422 {"error":"query too large","detail","limit","max"}.
func writeTooLarge(w http.ResponseWriter, te *query.TooLargeError) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "query too large", "detail": te.Error(), "limit": te.Limit, "max": te.Max})
}

// contentTypes are the media types of the answers' formats.
var contentTypes = map[string]string{"json": "application/json", "csv": "text/csv; charset=utf-8", "arrow": ArrowMediaType}

// ArrowMediaType is the media type of an Arrow IPC stream.
const ArrowMediaType = "application/vnd.apache.arrow.stream"

// acceptsArrow reports whether an Accept header asks for an Arrow stream.
func acceptsArrow(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == ArrowMediaType {
			return true
		}
	}
	return false
}
