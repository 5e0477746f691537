package query

import (
	"context"
	"sync"
	"time"

	"github.com/braid-data/braid/logic"
)

// liveCoalesce: at most one recompute per live query per this.
var liveCoalesce = 200 * time.Millisecond

// JoinLive adds a client to the live query of v and q — the view and
// every parameter that decides its rows — starting it when it is the
// first client. The client reads its answers from the LiveFeed and calls
// Leave when it goes; the live query stops when its last client leaves.
func (e *Engine) JoinLive(v *logic.View, q Query) *LiveFeed { return e.hub.join(v, q) }

// Leave removes the client from its live query (once per JoinLive).
func (f *LiveFeed) Leave() { f.e.hub.leave(f) }

// hub fans the process's one commit subscription out to the live queries
// of the committed stream, and checks for new batch versions (one cheap
// Current() per period, for all of them). A live query (a view and its
// parameters) is computed once per change for every client connected to
// it (LiveFeed).
type hub struct {
	e     *Engine
	once  sync.Once
	mu    sync.Mutex
	feeds map[string]*LiveFeed // by liveKey
	seq   map[partKey]uint64   // latest seq seen per partition of a stream
	seqs  map[string]string    // latest position polled per stream (StreamSpeed.Seqs), without a notifier
	// watchers are the channels of Engine.Watch, by stream (capacity 1).
	watchers map[string]map[chan struct{}]bool
}

// partKey names a partition of a stream.
type partKey struct {
	stream string
	p      int
}

func newHub(e *Engine) *hub {
	return &hub{e: e, feeds: map[string]*LiveFeed{}, seq: map[partKey]uint64{}, seqs: map[string]string{},
		watchers: map[string]map[chan struct{}]bool{}}
}

// liveKey names a live query: the view and every parameter that decides
// its rows.
func liveKey(v *logic.View, q Query) string { return cacheKey(v, q, "", "") }

// join adds a client to the live query of v and q, starting it when it is
// the first.
func (h *hub) join(v *logic.View, q Query) *LiveFeed {
	h.once.Do(func() { go h.run(h.e.bgCtx) })
	key := liveKey(v, q)
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[key]
	if f == nil {
		f = newLiveFeed(h.e, key, v, q)
		h.feeds[key] = f
		h.e.liveQueries.Inc()
		go f.run()
	} else {
		h.e.shared.Inc()
	}
	f.clients++
	return f
}

// leave removes a client; the last one to leave stops the live query,
// and the computation it may be running.
func (h *hub) leave(f *LiveFeed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.clients--; f.clients == 0 {
		delete(h.feeds, f.key)
		h.e.liveQueries.Dec()
		f.cancel()
	}
}

// watch adds a watcher of stream's changes (Engine.Watch).
func (h *hub) watch(stream string) (<-chan struct{}, func()) {
	h.once.Do(func() { go h.run(h.e.bgCtx) })
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.watchers[stream] == nil {
		h.watchers[stream] = map[chan struct{}]bool{}
	}
	h.watchers[stream][ch] = true
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.watchers[stream], ch)
			if len(h.watchers[stream]) == 0 {
				delete(h.watchers, stream)
			}
			h.mu.Unlock()
		})
	}
}

// poke tells the live queries and watchers of stream ("" = all of them)
// that their inputs may have changed, never blocking. A stream's commits do not
// change the answers of its batch-tier views: only a new batch version
// (stream "") pokes them.
func (h *hub) poke(stream string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.feeds {
		if stream == "" || (f.v.Stream.Name == stream && f.v.Tier == logic.TierLive) {
			select {
			case f.poke <- struct{}{}:
			default:
			}
		}
	}
	for st, chans := range h.watchers {
		if stream != "" && st != stream {
			continue
		}
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// notice records a commit of a partition and pokes the stream's live
// queries when the partition's seq moved (a seq of 0: a reset).
func (h *hub) notice(n CommitNotice) {
	k := partKey{n.Stream, n.Part}
	h.mu.Lock()
	moved := n.Seq == 0 || n.Seq != h.seq[k]
	if n.Seq > h.seq[k] {
		h.seq[k] = n.Seq
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
	for st := range h.watchers {
		out[st] = true
	}
	return out
}

func (h *hub) run(ctx context.Context) {
	e := h.e
	var notices <-chan CommitNotice
	if e.notifier != nil {
		notices = e.notifier.Subscribe(ctx)
		e.logger.Info("live push: subscribed to speed-layer commits")
	} else {
		e.logger.Info("live push: no commit notifier, polling the speed positions once per period", "period", e.poll)
	}
	tick := time.NewTicker(e.poll)
	defer tick.Stop()
	lastVersion := ""
	if e.views != nil {
		if v, err := e.views.Current(); err == nil && v != nil {
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
					e.logger.Warn("live push: commit subscription ended; falling back to polling")
				}
				continue
			}
			h.notice(n)
		case <-tick.C:
			if e.views != nil {
				if v, err := e.views.Current(); err == nil && v != nil && v.ID != lastVersion {
					lastVersion = v.ID
					h.poke("")
				}
			}
			if notices == nil && e.status != nil {
				for st := range h.streams() {
					if pos, err := e.status.StreamStatus(ctx, st); err == nil && pos.Seq != 0 {
						seqs := pos.Seqs()
						h.mu.Lock()
						moved := seqs != h.seqs[st]
						h.seqs[st] = seqs
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
