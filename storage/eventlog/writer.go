package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// writer appends to one stream's clean log. It is the place where event
// ids are deduplicated, so that a log record can carry many events:
//
//   - Concurrent Publish calls are grouped: one goroutine at a time packs
//     everything waiting into as few records as the server's message size
//     allows, and answers every caller once its events are stored.
//   - Before packing, an event whose id was stored less than the dedup
//     window earlier is dropped (idWindow), as is a second event with the
//     same id in the group.
//   - Every record is published with the log's last sequence as it knows it
//     as the expected one (JetStream's compare-and-set on the stream), so
//     the ids it holds are exactly those of the log: when another process
//     appended meanwhile the publish fails, the writer reads what was
//     appended, adds those ids, decides again and retries. Two writers, in
//     one process or several, can never store the same id twice.
//   - A publish whose outcome is unknown (a timeout) is settled by reading
//     the record at the expected position: it is ours (its message id is
//     the writer's token), another writer's, or absent.
//   - Every record carries the running count of the events in the log
//     (counts.go): the writer knows it at w.last, as it knows the ids, and
//     adds the events of every record it appends or learns.
//
// The window is rebuilt from the log at the first write: the ids of the
// records stored in the last window, with JetStream's timestamps.
type writer struct {
	l      *Log
	stream string

	mu       sync.Mutex
	pending  []*writeReq
	flushing bool

	// Owned by the one flushing goroutine.
	loaded bool
	last   uint64     // the log's last sequence as far as the ids go
	count  eventCount // the running event count at last (counts.go)
	ids    *idWindow
	token  string
	n      uint64
	buf    []byte   // the record being built (reused)
	zbuf   []byte   // the record compressed (reused)
	chunk  []Record // its events (reused)
	keys   []idKey  // its ids (reused)
	todo   []item   // the group's events (reused)
}

type writeReq struct {
	recs []Record
	left int        // events not yet stored or dropped
	done chan error // buffered
}

func (l *Log) writerFor(stream string) *writer {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	w := l.writers[stream]
	if w == nil {
		w = &writer{l: l, stream: stream, ids: newIDWindow(l.opts.DedupWindow.Milliseconds()), token: nuid.Next()}
		l.writers[stream] = w
	}
	return w
}

// write queues recs and waits until they are stored.
func (w *writer) write(ctx context.Context, recs []Record) error {
	req := &writeReq{recs: recs, left: len(recs), done: make(chan error, 1)}
	w.mu.Lock()
	w.pending = append(w.pending, req)
	start := !w.flushing
	w.flushing = true
	w.mu.Unlock()
	if start {
		go w.flushLoop()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

func (w *writer) flushLoop() {
	for {
		w.mu.Lock()
		group := w.pending
		w.pending = nil
		if len(group) == 0 {
			w.flushing = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.flush(group)
	}
}

// item is one event of a group on its way into the log.
type item struct {
	req *writeReq
	rec Record
}

// flush stores a group's events: every request is answered.
func (w *writer) flush(group []*writeReq) {
	ctx, cancel := context.WithTimeout(context.Background(), w.l.opts.PublishTimeout)
	defer cancel()
	todo := w.todo[:0]
	for _, r := range group {
		if r.left == 0 {
			r.done <- nil
		}
		for _, rec := range r.recs {
			todo = append(todo, item{r, rec})
		}
	}
	err := w.store(ctx, todo)
	clear(todo) // let go of the events
	w.todo = todo[:0]
	for _, r := range group {
		if r.left > 0 {
			if err == nil {
				err = fmt.Errorf("%w: events left unwritten", ErrUnavailable)
			}
			r.done <- err
		}
	}
}

// finish marks one event of its request stored (or dropped as a duplicate).
func finish(it *item) {
	it.req.left--
	if it.req.left == 0 {
		it.req.done <- nil
	}
}

// store writes todo in order, a record at a time.
func (w *writer) store(ctx context.Context, todo []item) error {
	if !w.loaded {
		// The first write rebuilds the window from the log: up to a
		// window's records, which can take seconds, so on a budget of its
		// own (callers waiting meanwhile time out and retry; their events
		// are written once it is done, and deduplicated by id).
		t0 := time.Now()
		lctx, cancel := context.WithTimeout(context.Background(), max(w.l.opts.PublishTimeout, loadTimeout))
		err := w.learn(lctx, true)
		cancel()
		if err != nil {
			return err
		}
		w.loaded = true
		w.l.opts.Logger.Info("event log: dedup window loaded", "stream", w.stream, "ids", w.ids.len(time.Now().UnixMilli()),
			"window", w.l.opts.DedupWindow, "last_seq", w.last, "took", time.Since(t0).Round(time.Millisecond))
	}
	limit := w.l.maxRecord()
	buf, chunk, keys := w.buf, w.chunk, w.keys
	defer func() {
		clear(chunk)
		w.buf, w.chunk, w.keys = buf[:0], chunk[:0], keys[:0]
	}()
	for len(todo) > 0 {
		now := time.Now().UnixMilli()
		w.ids.expire(now)
		// Take the events of the next record: duplicates are dropped (and
		// count as stored), the rest fill the record up to the limit.
		chunk, keys = chunk[:0], keys[:0]
		size, took := 16, 0
		for _, it := range todo {
			if len(chunk) > 0 && size+packedSize(it.rec) > limit {
				break
			}
			took++
			if it.rec.ID != "" {
				k := w.ids.key(it.rec.ID)
				if w.ids.seenOrAdd(k, now) {
					continue
				}
				keys = append(keys, k)
			}
			chunk = append(chunk, it.rec)
			size += packedSize(it.rec)
		}
		if len(chunk) > 0 {
			if need := size + 16; cap(buf) < need {
				buf = make([]byte, 0, need)
			}
			buf = appendPacked(buf[:0], chunk)
			rec := compressPacked(w.zbuf, buf)
			if len(rec) > 0 && rec[0] == packedS2 {
				w.zbuf = rec[:0]
			}
			err := w.publish(ctx, rec, len(chunk))
			if err != nil {
				for _, k := range keys {
					w.ids.remove(k)
				}
				if errors.Is(err, errConflict) {
					// Another writer appended: learn its ids, decide again.
					if err := w.learn(ctx, false); err != nil {
						return err
					}
					continue
				}
				return err
			}
		}
		for i := range took {
			finish(&todo[i])
		}
		todo = todo[took:]
	}
	return nil
}

// loadTimeout bounds the rebuild of a window from the log.
const loadTimeout = 2 * time.Minute

// errConflict: the log's last sequence is not the one the writer knew.
var errConflict = errors.New("eventlog: log moved")

// publish appends one record of n events at w.last+1.
func (w *writer) publish(ctx context.Context, data []byte, n int) error {
	w.n++
	id := w.token + "." + strconv.FormatUint(w.n, 10)
	count := w.count.next(w.last+1, n)
	m := &nats.Msg{Subject: w.l.Subject(w.stream), Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
	count.setHeader(m.Header)
	ack, err := w.l.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(w.last))
	if err == nil {
		w.last, w.count = ack.Sequence, count
		return nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		if apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant {
			return errConflict
		}
		return classify(err)
	}
	// Unknown outcome: the record is at w.last+1 or nowhere (any later
	// publish of it would fail the expected sequence).
	rctx, cancel := context.WithTimeout(context.Background(), w.l.opts.PublishTimeout)
	defer cancel()
	s, serr := w.l.js.Stream(rctx, w.l.StreamName(w.stream))
	if serr == nil {
		got, gerr := s.GetMsg(rctx, w.last+1)
		switch {
		case gerr == nil && got.Header.Get(jetstream.MsgIDHeader) == id:
			w.last, w.count = got.Sequence, count
			return nil
		case gerr == nil:
			return errConflict
		}
	}
	return classify(err)
}

// learn adds the ids of the records the window is missing and moves
// w.last to the log's last sequence: at the first write (first) those
// stored during the last window, later those another writer appended
// after w.last (whose events it adds to w.count). At the first write the
// count is the one of the log's last record.
func (w *writer) learn(ctx context.Context, first bool) error {
	s, err := w.l.js.Stream(ctx, w.l.StreamName(w.stream))
	if err != nil {
		return fmt.Errorf("%w: stream %s: %v", ErrUnavailable, w.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("%w: stream %s info: %v", ErrUnavailable, w.stream, err)
	}
	last := info.State.LastSeq
	if first {
		w.count = eventCount{}
		if info.State.Msgs > 0 && last > 0 {
			m, err := s.GetMsg(ctx, last)
			switch {
			case err == nil:
				w.count, _ = countOf(m.Header)
			case !errors.Is(err, jetstream.ErrMsgNotFound):
				return fmt.Errorf("%w: stream %s record %d: %v", ErrUnavailable, w.stream, last, err)
			}
		}
	}
	var cfg jetstream.OrderedConsumerConfig
	switch {
	case info.State.Msgs == 0 || last == 0 || (!first && last <= w.last):
		w.last = last
		return nil
	case first:
		from := time.Now().Add(-w.l.opts.DedupWindow)
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from}
	default:
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: w.last + 1}
	}
	if err := w.read(ctx, s, cfg, last, !first); err != nil {
		return err
	}
	w.last = last
	return nil
}

// read adds the ids of the records a consumer delivers, up to sequence
// last, and when count is set their events to w.count.
func (w *writer) read(ctx context.Context, s jetstream.Stream, cfg jetstream.OrderedConsumerConfig, last uint64, count bool) error {
	cfg.FilterSubjects = []string{w.l.Subject(w.stream)}
	c, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%w: read %s: %v", ErrUnavailable, w.stream, err)
	}
	for {
		if ci := c.CachedInfo(); ci != nil && ci.NumPending == 0 && ci.Delivered.Stream >= last {
			return nil
		}
		batch, err := c.FetchNoWait(1000)
		if err != nil {
			return fmt.Errorf("%w: read %s: %v", ErrUnavailable, w.stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("eventlog: read %s: %w", w.stream, err)
			}
			t := md.Timestamp.UnixMilli()
			if err := Unpack(m.Data(), func(_ int, id, _ []byte) error {
				if len(id) > 0 {
					w.ids.add(w.ids.keyBytes(id), t)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("eventlog: %s record %d: %w", w.stream, md.Sequence.Stream, err)
			}
			if count {
				w.count = w.count.learn(m.Headers(), md.Sequence.Stream, Count(m.Data()))
			}
			if md.Sequence.Stream >= last {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("%w: read %s: %v", ErrUnavailable, w.stream, err)
		}
		if got == 0 {
			if ctx.Err() != nil {
				return fmt.Errorf("%w: read %s: %v", ErrUnavailable, w.stream, ctx.Err())
			}
			// Nothing left before last (records removed by the limits).
			info, err := c.Info(ctx)
			if err != nil {
				return fmt.Errorf("%w: read %s: %v", ErrUnavailable, w.stream, err)
			}
			if info.NumPending == 0 {
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
