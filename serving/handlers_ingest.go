package serving

import (
	"bytes"
	"encoding/json"
	"errors"
	"iter"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
)

// handleIngest: POST /v1/streams/{stream}/events[?decide=true]. The body
// is read (and decoded) whole before the request takes one of the
// http.max_in_flight slots, which are for requests storing their events
// (see body.go). With decide=true the stream's rules decide each valid
// event before it is stored (ingest.DecideSeq); without, they are not
// evaluated.
func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	stream := chi.URLParam(r, "stream")
	if s.opts.Catalog.Streams[stream] == nil {
		writeError(w, http.StatusNotFound, "unknown stream", stream)
		return
	}
	decide := false
	if d := r.URL.Query().Get("decide"); d != "" {
		var err error
		if decide, err = strconv.ParseBool(d); err != nil {
			writeError(w, http.StatusBadRequest, "bad parameter decide", "want true or false")
			return
		}
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
		max = defaults.HTTPMaxBodyBytes
	}
	body, ref := s.readBody(w, r, coding, max)
	if ref != nil {
		ref.write(w)
		return
	}
	defer body.release()
	events, msg := splitBody(body.buf, ndjson)
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
	ingestSeq := s.ingester.IngestSeq
	if decide {
		ingestSeq = s.ingester.DecideSeq
	}
	res, err := ingestSeq(r.Context(), stream, events, "http")
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, ingest.ErrFeatures):
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, "entity features unavailable", err.Error())
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

// splitBody cuts a request body into raw events, as it is read: NDJSON
// lines (blank lines skipped; a bad line is an event that will be
// rejected), or one JSON object, or the elements of an array. The events
// alias body. A non-empty msg is a 400.
func splitBody(body []byte, ndjson bool) (events iter.Seq[[]byte], msg string) {
	if ndjson {
		if len(bytes.TrimSpace(body)) == 0 {
			return nil, "empty body"
		}
		return func(yield func([]byte) bool) {
			for b := body; len(b) > 0; {
				line := b
				if i := bytes.IndexByte(b, '\n'); i >= 0 {
					line, b = b[:i], b[i+1:]
				} else {
					b = nil
				}
				if line = bytes.TrimSpace(line); len(line) > 0 && !yield(line) {
					return
				}
			}
		}, ""
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
		return func(yield func([]byte) bool) { yield(body) }, ""
	case '[':
		return arrayElements(body), ""
	}
	return nil, "body must be a JSON object or an array of objects"
}

// arrayElements yields the elements of a valid JSON array, without the
// white space around them.
func arrayElements(arr []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		depth, start := 0, -1
		inString, escaped := false, false
		for i := 1; i < len(arr)-1; i++ { // inside the brackets
			c := arr[i]
			if inString {
				switch {
				case escaped:
					escaped = false
				case c == '\\':
					escaped = true
				case c == '"':
					inString = false
				}
				continue
			}
			switch c {
			case ' ', '\t', '\n', '\r':
				continue
			case ',':
				if depth == 0 {
					if !yield(bytes.TrimSpace(arr[start:i])) {
						return
					}
					start = -1
					continue
				}
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			if start < 0 {
				start = i
			}
		}
		if start >= 0 {
			yield(bytes.TrimSpace(arr[start : len(arr)-1]))
		}
	}
}
