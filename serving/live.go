package serving

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
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
	liveCoalesce  = 200 * time.Millisecond // at most one recompute per live query per this
	liveKeepalive = 15 * time.Second       // comment lines keep proxies from closing idle streams
)

// hub fans the process's one commit subscription out to the live queries
// of the committed stream, and checks for new batch versions (one cheap
// Current() per period, for all of them). A live query (a view and its
// parameters) is computed once per change for every client connected to
// it (liveFeed).
type hub struct {
	s     *Server
	once  sync.Once
	mu    sync.Mutex
	feeds map[string]*liveFeed // by liveKey
	seq   map[string]uint64    // latest seq seen per stream
}

func newHub(s *Server) *hub {
	return &hub{s: s, feeds: map[string]*liveFeed{}, seq: map[string]uint64{}}
}

// liveKey names a live query: the view and every parameter that decides
// its rows.
func liveKey(v *logic.View, q Query) string { return cacheKey(v, q, "", 0) }

// join adds a client to the live query of v and q, starting it when it is
// the first.
func (h *hub) join(v *logic.View, q Query) *liveFeed {
	h.once.Do(func() { go h.run(h.s.bgCtx) })
	key := liveKey(v, q)
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[key]
	if f == nil {
		f = newLiveFeed(h.s, key, v, q)
		h.feeds[key] = f
		h.s.liveQueries.Inc()
		go f.run()
	} else {
		h.s.shared.Inc()
	}
	f.clients++
	return f
}

// leave removes a client; the last one to leave stops the live query,
// and the computation it may be running.
func (h *hub) leave(f *liveFeed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.clients--; f.clients == 0 {
		delete(h.feeds, f.key)
		h.s.liveQueries.Dec()
		f.cancel()
	}
}

// poke tells the live queries of stream ("" = every live query) that
// their inputs may have changed, never blocking.
func (h *hub) poke(stream string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.feeds {
		if stream == "" || f.v.Stream.Name == stream {
			select {
			case f.poke <- struct{}{}:
			default:
			}
		}
	}
}

// notice records a commit and pokes the stream's live queries when it moved.
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
	for _, f := range h.feeds {
		out[f.v.Stream.Name] = true
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
	return defaults.LivePoll
}

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
// Clients of the same live query share its computations (liveFeed): the
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
	f := s.hub.join(v, q)
	defer s.hub.leave(f)
	s.sseClients.Inc()
	defer s.sseClients.Dec()

	// The first answer (or error) of the live query.
	st, ok := f.next(ctx, 0, 0)
	if !ok {
		return
	}
	if st.gen == 0 || st.err != nil {
		_, tooLarge := isTooLarge(st.err)
		_, rebuilding := isRebuilding(st.err)
		if tooLarge || rebuilding {
			s.queryError(w, v.Name, st.err) // no rows to stream
			return
		}
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
		if st.gen > gen {
			a := st.ans.a
			if gen == 0 {
				data, err := st.ans.encoded("rows")
				if err != nil || !send("snapshot", data) {
					return
				}
			} else {
				if a.Version != version {
					var b bytes.Buffer
					b.WriteString(`{"version":`)
					writeStr(&b, a.Version)
					b.WriteString(`,"batch_cutoff":`)
					writeTimeOrNull(&b, a.Cutoff)
					b.WriteByte('}')
					if !send("batch", b.Bytes()) {
						return
					}
				}
				d := f.diff(st, gen)
				if len(d.rows) > 2 && !send("rows", d.rows) {
					return
				}
				if len(d.final) > 2 && !send("final", d.final) {
					return
				}
			}
			gen, version = st.gen, a.Version
		}
		if st.errGen > errGen && st.err != nil {
			var b bytes.Buffer
			b.WriteString(`{"error":`)
			writeStr(&b, st.err.Error())
			if te, ok := isTooLarge(st.err); ok {
				b.WriteString(`,"limit":`)
				writeStr(&b, te.Limit)
				b.WriteString(`,"max":`)
				b.WriteString(strconv.FormatInt(te.Max, 10))
				b.WriteByte('}')
				send("error", b.Bytes())
				return // the query has outgrown its budget: a reconnect answers 422
			}
			b.WriteByte('}')
			if !send("error", b.Bytes()) {
				return
			}
		}
		errGen = st.errGen
		for {
			var wait bool
			st, wait = f.poll(gen, errGen)
			if !wait {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-s.bgCtx.Done():
				return
			case <-st.changed:
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
