package serving

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
)

// liveKeepalive: comment lines keep proxies from closing idle streams.
var liveKeepalive = 15 * time.Second

// handleLive: GET /v1/views/{view}/live — Server-Sent Events. Events:
//
//	snapshot  every row in range (first event of every connection)
//	rows      the rows that changed since the last event
//	final     rows whose window became final (behind the watermark), with their final values
//	batch     {"version","batch_cutoff"}: a new batch version now answers part of the range
//	error     {"error"}: a recompute failed; the stream stays open and retries on the next notice
//	          (a query grown beyond its budget ends the stream after it: a reconnect gets 422)
//
// Every event has an incrementing id; a client reconnecting with
// Last-Event-ID continues the numbering (and gets a fresh snapshot).
// Clients of the same live query share its computations (query.LiveFeed): the
// first answer is awaited before the response starts, so a view that is
// rebuilding answers 503 and a query beyond its budget 422.
func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) {
	v, q, ok := s.parseViewQuery(w, r)
	if !ok {
		return
	}
	rc := http.NewResponseController(w)
	ctx := r.Context()
	id := uint64(0)
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		if n, err := strconv.ParseUint(last, 10, 64); err == nil {
			id = n
		}
	}
	f := s.engine.JoinLive(v, q)
	defer f.Leave()
	s.sseClients.Inc()
	defer s.sseClients.Dec()

	// The first answer (or error) of the live query.
	st, ok := f.Next(ctx, 0, 0)
	if !ok {
		return
	}
	if st.Gen == 0 || st.Err != nil {
		var te *query.TooLargeError
		var re *query.RebuildingError
		if errors.As(st.Err, &te) || errors.As(st.Err, &re) {
			s.queryError(w, v.Name, st.Err) // no rows to stream
			return
		}
	}
	h := w.Header()
	h.Set(DefinitionHeader, v.Definition())
	h.Set(TierHeader, v.Tier.String())
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	var head bytes.Buffer
	// send writes one event; data is shared with other clients, never
	// copied.
	send := func(event string, data []byte) bool {
		id++
		head.Reset()
		fmt.Fprintf(&head, "id: %d\nevent: %s\ndata: ", id, event)
		if _, err := w.Write(head.Bytes()); err != nil {
			return false
		}
		if _, err := w.Write(data); err != nil {
			return false
		}
		if _, err := io.WriteString(w, "\n\n"); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	var gen, errGen uint64 // what this client has been sent of the live query
	version := ""
	keepalive := time.NewTicker(liveKeepalive)
	defer keepalive.Stop()
	for {
		if st.Gen > gen {
			if gen == 0 {
				data, err := st.Snapshot()
				if err != nil || !send("snapshot", data) {
					return
				}
			} else {
				if st.Version() != version {
					if !send("batch", st.BatchEvent()) {
						return
					}
				}
				rows, final := f.Diff(st, gen)
				if len(rows) > 2 && !send("rows", rows) {
					return
				}
				if len(final) > 2 && !send("final", final) {
					return
				}
			}
			gen, version = st.Gen, st.Version()
		}
		if st.ErrGen > errGen && st.Err != nil {
			var b []byte
			b = logic.AppendJSONString(append(b, `{"error":`...), st.Err.Error())
			var te *query.TooLargeError
			if errors.As(st.Err, &te) {
				b = logic.AppendJSONString(append(b, `,"limit":`...), te.Limit)
				b = strconv.AppendInt(append(b, `,"max":`...), te.Max, 10)
				b = append(b, '}')
				send("error", b)
				return // the query has outgrown its budget: a reconnect answers 422
			}
			b = append(b, '}')
			if !send("error", b) {
				return
			}
		}
		errGen = st.ErrGen
		for {
			var wait bool
			st, wait = f.Poll(gen, errGen)
			if !wait {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-f.Done():
				return
			case <-st.Changed():
				continue
			case <-keepalive.C:
				if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
					return
				}
				continue
			}
		}
	}
}
