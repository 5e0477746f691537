package serving

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/storage/eventlog"
)

// handleIngest: POST /v1/streams/{stream}/events. The body is read (and
// decoded) whole before the request takes one of the http.max_in_flight
// slots, which are for requests storing their events (see body.go).
func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	stream := chi.URLParam(r, "stream")
	if s.opts.Catalog.Streams[stream] == nil {
		writeError(w, http.StatusNotFound, "unknown stream", stream)
		return
	}
	ndjson, ref := bodyType(r.Header.Get("Content-Type"))
	if ref != nil {
		ref.write(w)
		return
	}
	coding, ref := bodyCoding(r.Header)
	if ref != nil {
		ref.write(w)
		return
	}
	if s.opts.Log == nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "event log unavailable", nil)
		return
	}
	max := s.cfg.HTTP.MaxBodyBytes
	if max <= 0 {
		max = 16 << 20
	}
	body, ref := s.readBody(w, r, coding, max)
	if ref != nil {
		ref.write(w)
		return
	}
	defer body.release()
	raws, msg := splitBody(body.buf, ndjson)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg, nil)
		return
	}
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "too many ingest requests in flight", cap(s.inflight))
		return
	}
	res, err := s.ingester.Ingest(r.Context(), stream, raws, "http")
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, eventlog.ErrFull):
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusTooManyRequests, "event log is full", err.Error())
	case errors.Is(err, eventlog.ErrUnavailable):
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, "event log unavailable", err.Error())
	default:
		s.logger.Error("ingest failed", "stream", stream, "err", err)
		writeError(w, http.StatusInternalServerError, "ingest failed", err.Error())
	}
}

// splitBody cuts a request body into raw events: NDJSON lines (blank lines
// skipped; a bad line is an event that will be rejected), or one JSON
// object or array as a whole. A non-empty msg is a 400.
func splitBody(body []byte, ndjson bool) (raws [][]byte, msg string) {
	if ndjson {
		for len(body) > 0 {
			line := body
			if i := bytes.IndexByte(body, '\n'); i >= 0 {
				line, body = body[:i], body[i+1:]
			} else {
				body = nil
			}
			if line = bytes.TrimSpace(line); len(line) > 0 {
				raws = append(raws, line)
			}
		}
		if len(raws) == 0 {
			return nil, "empty body"
		}
		return raws, ""
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, "empty body"
	}
	if !json.Valid(body) {
		return nil, "body is not valid JSON (send one object, an array, or NDJSON as application/x-ndjson)"
	}
	switch body[0] {
	case '{':
		return [][]byte{body}, ""
	case '[':
		var arr []json.RawMessage
		if err := json.Unmarshal(body, &arr); err != nil {
			return nil, "body is not valid JSON"
		}
		raws = make([][]byte, len(arr))
		for i, a := range arr {
			raws[i] = a
		}
		return raws, ""
	}
	return nil, "body must be a JSON object or an array of objects"
}
