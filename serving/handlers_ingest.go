package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
)

// handleIngest: POST /v1/streams/{stream}/events.
func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	stream := chi.URLParam(r, "stream")
	if s.opts.Catalog.Streams[stream] == nil {
		writeError(w, http.StatusNotFound, "unknown stream", stream)
		return
	}
	ndjson := false
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			writeError(w, http.StatusUnsupportedMediaType, "bad content type", ct)
			return
		}
		switch mt {
		case "application/json":
		case "application/x-ndjson", "application/jsonl", "application/jsonlines":
			ndjson = true
		default:
			writeError(w, http.StatusUnsupportedMediaType, "unsupported content type", "want application/json (an object or an array) or application/x-ndjson")
			return
		}
	}
	if s.opts.Log == nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "event log unavailable", nil)
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
	max := s.cfg.HTTP.MaxBodyBytes
	if max <= 0 {
		max = 16 << 20
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body too large", map[string]int64{"max_body_bytes": mbe.Limit})
			return
		}
		writeError(w, http.StatusBadRequest, "read body", err.Error())
		return
	}
	raws, msg := splitBody(body, ndjson)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg, nil)
		return
	}
	res, err := s.ingester.ingestScreened(r.Context(), stream, raws, "http")
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

// bigEventBytes: an event up to this size cannot outgrow one log message
// (NATS max_payload, 1 MiB by default): its canonical record and its masked
// dead-letter payload stay below 6 × bigEventBytes even when JSON escaping
// expands every byte. Larger events are screened one by one.
const bigEventBytes = 64 << 10

// dlqHeadBytes is how much of an oversized dead letter's masked payload is
// kept (enough to find the event; the rest cannot be stored).
const dlqHeadBytes = 4 << 10

// ingestScreened is Ingest with a guard against events too large for one
// log message: without it a rejected 2 MiB event makes its dead letter
// unpublishable, the whole request fails with 503 and every retry fails the
// same way. An event larger than bigEventBytes is prepared here first: if it
// is valid and its record fits a message it goes the normal way; else it is
// dead-lettered here with its reason (or "record too large") and a payload
// cut to a head when the whole one would not fit.
func (in *Ingester) ingestScreened(ctx context.Context, stream string, raws [][]byte, source string) (IngestResult, error) {
	var s *logic.Stream
	if in.cat != nil {
		s = in.cat.Streams[stream]
	}
	if s == nil || in.log == nil || !slices.ContainsFunc(raws, func(r []byte) bool { return len(r) > bigEventBytes }) {
		return in.Ingest(ctx, stream, raws, source)
	}
	maxMsg := int64(1 << 20)
	if js := in.log.JetStream(); js != nil && js.Conn() != nil && js.Conn().MaxPayload() > 0 {
		maxMsg = js.Conn().MaxPayload()
	}
	now := in.now()
	var dls []eventlog.DeadLetter
	var errs []IngestError
	rest := make([][]byte, 0, len(raws))
	restIdx := make([]int, 0, len(raws))
	for i, raw := range raws {
		if len(raw) > bigEventBytes {
			ev, rec, err := s.Prepare(raw, now.UnixMilli())
			var rej *logic.RejectError
			switch {
			case err == nil && int64(len(rec)+len(ev.ID))+1024 <= maxMsg:
			case err == nil:
				rej = &logic.RejectError{Reason: fmt.Sprintf("event record of %d bytes is larger than the log's message limit of %d bytes", len(rec), maxMsg)}
			case !errors.As(err, &rej):
				return IngestResult{Errors: []IngestError{}}, fmt.Errorf("serving: prepare event %d: %w", i, err)
			}
			if rej != nil {
				payload := s.MaskPayload(bytes.TrimSpace(raw))
				if esc, err := json.Marshal(json.RawMessage(payload)); err != nil || int64(len(esc))+4096 > maxMsg {
					payload = payloadHead(payload)
				}
				dls = append(dls, eventlog.DeadLetter{Stream: stream, Reason: rej.Reason, Field: rej.Field, Source: source, Time: now.UTC(), Payload: payload})
				errs = append(errs, IngestError{Index: i, Error: rej.Error()})
				continue
			}
		}
		rest = append(rest, raw)
		restIdx = append(restIdx, i)
	}
	if len(dls) > 0 {
		if err := in.log.PublishDeadLetters(ctx, stream, dls); err != nil {
			return IngestResult{Errors: []IngestError{}}, fmt.Errorf("serving: dead-letter to %s: %w", stream, err)
		}
	}
	res := IngestResult{Errors: []IngestError{}}
	if len(rest) > 0 {
		var err error
		if res, err = in.Ingest(ctx, stream, rest, source); err != nil {
			return res, err
		}
		for k := range res.Errors {
			res.Errors[k].Index = restIdx[res.Errors[k].Index]
		}
	}
	res.Rejected += len(dls)
	res.Errors = append(res.Errors, errs...)
	slices.SortFunc(res.Errors, func(a, b IngestError) int { return a.Index - b.Index })
	if c := in.counts[stream]; c != nil {
		c.rejected.Add(uint64(len(dls)))
	}
	in.events.WithLabelValues(stream, "rejected").Add(float64(len(dls)))
	return res, nil
}

// payloadHead keeps the head of a (masked) payload that is too large to be
// stored whole: {"truncated": true, "bytes": N, "head": "..."}.
func payloadHead(p []byte) json.RawMessage {
	head := p
	if len(head) > dlqHeadBytes {
		head = head[:dlqHeadBytes]
	}
	b, _ := json.Marshal(struct {
		Truncated bool   `json:"truncated"`
		Bytes     int    `json:"bytes"`
		Head      string `json:"head"`
	}{true, len(p), strings.ToValidUTF8(string(head), "")})
	return b
}
