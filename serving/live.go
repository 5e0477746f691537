package serving

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// CommitNotice announces a commit of the speed layer: the stream and its
// new position (log sequence).
type CommitNotice struct {
	Stream string
	Seq    uint64
}

// CommitNotifier delivers the speed layer's commit notices. Subscribe is
// called once per process; the channel is closed when ctx ends. Notices may
// be lost (e.g. while reconnecting): live clients still see the next one,
// and the batch-version check runs on its own. The cmd/braid adapter
// PSUBSCRIBEs to the Redis channels {ns}:commits:*.
type CommitNotifier interface {
	Subscribe(ctx context.Context) <-chan CommitNotice
}

// Live push timing.
var (
	liveCoalesce  = 200 * time.Millisecond // at most one recompute per client per this
	liveKeepalive = 15 * time.Second       // comment lines keep proxies from closing idle streams
)

// hub fans the process's one commit subscription out to the live clients
// of the committed stream, and checks for new batch versions (one cheap
// Current() per period, for all clients).
type hub struct {
	s       *Server
	once    sync.Once
	mu      sync.Mutex
	clients map[*liveClient]struct{}
	seq     map[string]uint64 // latest seq seen per stream
}

type liveClient struct {
	stream string
	notify chan struct{} // capacity 1: pending notices coalesce
}

func newHub(s *Server) *hub {
	return &hub{s: s, clients: map[*liveClient]struct{}{}, seq: map[string]uint64{}}
}

func (h *hub) add(stream string) *liveClient {
	h.once.Do(func() { go h.run(h.s.bgCtx) })
	c := &liveClient{stream: stream, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	return c
}

func (h *hub) remove(c *liveClient) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

// poke notifies the clients of stream ("" = every client), never blocking.
func (h *hub) poke(stream string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if stream == "" || c.stream == stream {
			select {
			case c.notify <- struct{}{}:
			default:
			}
		}
	}
}

// notice records a commit and pokes the stream's clients when it moved.
func (h *hub) notice(n CommitNotice) {
	h.mu.Lock()
	moved := n.Seq == 0 || n.Seq != h.seq[n.Stream]
	if n.Seq > h.seq[n.Stream] {
		h.seq[n.Stream] = n.Seq
	}
	h.mu.Unlock()
	if moved {
		h.poke(n.Stream)
	}
}

func (h *hub) streams() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]bool{}
	for c := range h.clients {
		out[c.stream] = true
	}
	return out
}

func (h *hub) run(ctx context.Context) {
	s := h.s
	var notices <-chan CommitNotice
	if s.opts.Notifier != nil {
		notices = s.opts.Notifier.Subscribe(ctx)
		s.logger.Info("live push: subscribed to speed-layer commits")
	} else {
		s.logger.Info("live push: no commit notifier, polling the speed positions once per period", "period", s.livePoll())
	}
	tick := time.NewTicker(s.livePoll())
	defer tick.Stop()
	lastVersion := ""
	if s.opts.Views != nil {
		if v, err := s.opts.Views.Current(); err == nil && v != nil {
			lastVersion = v.ID
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case n, ok := <-notices:
			if !ok {
				notices = nil
				if ctx.Err() == nil {
					s.logger.Warn("live push: commit subscription ended; falling back to polling")
				}
				continue
			}
			h.notice(n)
		case <-tick.C:
			if s.opts.Views != nil {
				if v, err := s.opts.Views.Current(); err == nil && v != nil && v.ID != lastVersion {
					lastVersion = v.ID
					h.poke("")
				}
			}
			if notices == nil && s.opts.SpeedStatus != nil {
				for st := range h.streams() {
					if pos, err := s.opts.SpeedStatus.StreamStatus(ctx, st); err == nil && pos.Seq != 0 {
						h.mu.Lock()
						moved := pos.Seq != h.seq[st]
						h.seq[st] = pos.Seq
						h.mu.Unlock()
						if moved {
							h.poke(st)
						}
					}
				}
			}
		}
	}
}

func (s *Server) livePoll() time.Duration {
	if s.opts.LivePoll > 0 {
		return s.opts.LivePoll
	}
	return time.Second
}

// liveRow is what a client last received of a row.
type liveRow struct {
	json  string
	final bool
}

// handleLive: GET /v1/views/{view}/live — Server-Sent Events. Events:
//
//	snapshot  every row in range (first event of every connection)
//	rows      the rows that changed since the last event
//	final     rows whose window became final (behind the watermark), with their final values
//	batch     {"version","batch_cutoff"}: a new batch version now answers part of the range
//	error     {"error"}: a recompute failed; the stream stays open and retries on the next notice
//
// Every event has an incrementing id; a client reconnecting with
// Last-Event-ID continues the numbering (and gets a fresh snapshot).
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
	c := s.hub.add(v.Stream.Name)
	defer s.hub.remove(c)
	s.sseClients.Inc()
	defer s.sseClients.Dec()

	if _, err := s.readInputs(ctx, v); err != nil {
		if _, rebuilding := isRebuilding(err); rebuilding {
			s.queryError(w, v.Name, err) // a rebuilding view has no rows to stream yet
			return
		}
	}
	// The first answer is computed before the stream opens, so that a
	// range reading more than a query may is refused (400) like a query.
	pending, pendingErr := s.lookup(ctx, v, q)
	var pe *ParamError
	if errors.As(pendingErr, &pe) {
		s.queryError(w, v.Name, pendingErr)
		return
	}
	h := w.Header()
	h.Set(DefinitionHeader, v.Definition())
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	var buf bytes.Buffer
	send := func(event string, data []byte) bool {
		id++
		buf.Reset()
		fmt.Fprintf(&buf, "id: %d\nevent: %s\ndata: ", id, event)
		buf.Write(data)
		buf.WriteString("\n\n")
		if _, err := w.Write(buf.Bytes()); err != nil {
			return false
		}
		return rc.Flush() == nil
	}

	prev := map[string]liveRow{}
	version, first := "", true
	var rowsBuf, finalBuf bytes.Buffer
	// push recomputes the answer and sends what changed (everything first).
	push := func() bool {
		e, err := pending, pendingErr
		if e == nil && err == nil {
			e, err = s.lookup(ctx, v, q)
		}
		pending, pendingErr = nil, nil
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			s.logger.Warn("live query failed", "view", v.Name, "err", err)
			buf.Reset()
			buf.WriteString(`{"error":`)
			writeStr(&buf, err.Error())
			buf.WriteByte('}')
			return send("error", bytes.Clone(buf.Bytes()))
		}
		a := e.a
		if !first && a.Version != version {
			var b bytes.Buffer
			b.WriteString(`{"version":`)
			writeStr(&b, a.Version)
			b.WriteString(`,"batch_cutoff":`)
			writeTimeOrNull(&b, a.Cutoff)
			b.WriteByte('}')
			if !send("batch", b.Bytes()) {
				return false
			}
		}
		version = a.Version
		rowsBuf.Reset()
		finalBuf.Reset()
		rowsBuf.WriteByte('[')
		finalBuf.WriteByte('[')
		var one bytes.Buffer
		for i := range a.Rows {
			row := &a.Rows[i]
			k := strconv.FormatInt(row.Window, 10) + "\x00" + row.key
			one.Reset()
			appendRowJSON(&one, a, row)
			cur := liveRow{json: one.String(), final: row.Final}
			old, seen := prev[k]
			if seen && old == cur {
				continue
			}
			prev[k] = cur
			out := &rowsBuf
			if !first && row.Final && (!seen || !old.final) {
				out = &finalBuf
			}
			if out.Len() > 1 {
				out.WriteByte(',')
			}
			out.WriteString(cur.json)
		}
		rowsBuf.WriteByte(']')
		finalBuf.WriteByte(']')
		if first {
			first = false
			return send("snapshot", rowsBuf.Bytes())
		}
		if rowsBuf.Len() > 2 && !send("rows", rowsBuf.Bytes()) {
			return false
		}
		if finalBuf.Len() > 2 && !send("final", finalBuf.Bytes()) {
			return false
		}
		return true
	}
	if !push() {
		return
	}
	keepalive := time.NewTicker(liveKeepalive)
	defer keepalive.Stop()
	var timerC <-chan time.Time
	lastPush := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.bgCtx.Done():
			return
		case <-c.notify:
			if timerC != nil {
				continue // a recompute is already scheduled
			}
			if wait := liveCoalesce - time.Since(lastPush); wait > 0 {
				timerC = time.After(wait)
				continue
			}
			lastPush = time.Now()
			if !push() {
				return
			}
		case <-timerC:
			timerC = nil
			lastPush = time.Now()
			if !push() {
				return
			}
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
