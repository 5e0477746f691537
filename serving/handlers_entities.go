package serving

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/speedstore"
)

// EntityReader answers entity features, exact history ⊕ fresh speed
// state. (*speedstore.EntityReader) satisfies it.
//
// Read answers keys of an entity, in order, as of asOf (unix ms; hasAsOf
// false: now). Errors matching speedstore.ErrUnknownEntity (404),
// ErrEntityBadRequest (400) and ErrEntityBuilding (503, try again) say
// what the caller did or must wait for; any other means a store could not
// be read (503). Safe for concurrent use.
type EntityReader interface {
	Read(ctx context.Context, entity string, keys []string, asOf int64, hasAsOf bool) ([]speedstore.EntityAnswer, error)
}

// entityAnswer is the JSON of one key's features.
type entityAnswer struct {
	Entity      string          `json:"entity,omitempty"`
	Key         string          `json:"key"`
	AsOf        string          `json:"as_of"`
	Features    map[string]any  `json:"features"`
	Exact       map[string]bool `json:"exact"`
	FreshnessMs int64           `json:"freshness_ms"`
	Source      string          `json:"source"`
}

func (s *Server) entityJSON(e *logic.Entity, a speedstore.EntityAnswer, withEntity bool) entityAnswer {
	out := entityAnswer{Key: a.Key, AsOf: logic.FormatTime(a.AsOf), Features: make(map[string]any, len(e.Features)),
		Exact: make(map[string]bool, len(e.Features)), FreshnessMs: a.FreshnessMs, Source: a.Source}
	if withEntity {
		out.Entity = e.Name
	}
	for i := range e.Features {
		out.Features[e.Features[i].Name] = a.Values[i].Any()
		out.Exact[e.Features[i].Name] = a.Exact[i]
	}
	return out
}

// entityAsOf reads the optional as_of parameter.
func entityAsOf(q url.Values) (int64, bool, error) {
	if q.Get("as_of") == "" {
		return 0, false, nil
	}
	ms, err := parseTime(q, "as_of")
	return ms, err == nil, err
}

// handleEntity answers GET /v1/entities/{entity}/{key}[?as_of=T].
func (s *Server) handleEntity(w http.ResponseWriter, r *http.Request) {
	name, key := chi.URLParam(r, "entity"), chi.URLParam(r, "key")
	if k, err := url.PathUnescape(key); err == nil {
		key = k
	}
	e, ok := s.entity(w, name)
	if !ok {
		return
	}
	asOf, has, err := entityAsOf(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad parameter", err.Error())
		return
	}
	ans, err := s.opts.Entities.Read(r.Context(), name, []string{key}, asOf, has)
	if err != nil {
		s.entityError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.entityJSON(e, ans[0], true))
}

// lookupRequest is the body of POST /v1/entities/{entity}:lookup.
type lookupRequest struct {
	Keys []string `json:"keys"`
	AsOf string   `json:"as_of"`
}

// handleEntityPost answers POST /v1/entities/{entity}:lookup: the route
// takes the whole last segment, since a chi parameter cannot end at ':'.
func (s *Server) handleEntityPost(w http.ResponseWriter, r *http.Request) {
	target := chi.URLParam(r, "target")
	if t, err := url.PathUnescape(target); err == nil {
		target = t
	}
	name, ok := strings.CutSuffix(target, ":lookup")
	if !ok {
		writeError(w, http.StatusNotFound, "not found", "POST /v1/entities/{entity}:lookup")
		return
	}
	e, ok := s.entity(w, name)
	if !ok {
		return
	}
	var req lookupRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad body", `want {"keys": ["k1", ...], "as_of": "RFC 3339 (optional)"}: `+err.Error())
		return
	}
	if len(req.Keys) == 0 || len(req.Keys) > defaults.EntityLookupMaxKeys {
		writeError(w, http.StatusBadRequest, "bad body", "keys: want 1 to "+itoa(defaults.EntityLookupMaxKeys)+" keys")
		return
	}
	asOf, has, err := entityAsOf(url.Values{"as_of": {req.AsOf}})
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad body", err.Error())
		return
	}
	ans, err := s.opts.Entities.Read(r.Context(), name, req.Keys, asOf, has)
	if err != nil {
		s.entityError(w, err)
		return
	}
	out := struct {
		Entity  string         `json:"entity"`
		Results []entityAnswer `json:"results"`
	}{Entity: name, Results: make([]entityAnswer, len(ans))}
	for i, a := range ans {
		out.Results[i] = s.entityJSON(e, a, false)
	}
	writeJSON(w, http.StatusOK, out)
}

// entity finds an entity of the catalog, answering 404 or 503 when it
// cannot be read.
func (s *Server) entity(w http.ResponseWriter, name string) (*logic.Entity, bool) {
	e, ok := s.opts.Catalog.Entities[name]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown entity", name)
		return nil, false
	}
	if s.opts.Entities == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "this process has no entity store")
		return nil, false
	}
	return e, true
}

func (s *Server) entityError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, speedstore.ErrUnknownEntity):
		writeError(w, http.StatusNotFound, "unknown entity", err.Error())
	case errors.Is(err, speedstore.ErrEntityBadRequest):
		writeError(w, http.StatusBadRequest, "bad request", err.Error())
	case errors.Is(err, speedstore.ErrEntityBuilding):
		w.Header().Set("Retry-After", itoa(int(entityRetry/time.Second)))
		writeError(w, http.StatusServiceUnavailable, "entity building", err.Error())
	default:
		s.logger.Warn("entity read failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	}
}

// entityRetry is the Retry-After of an entity still building.
const entityRetry = 5 * time.Second

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
