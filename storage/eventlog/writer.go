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
//   - Every record of the clean log carries the running count of the
//     events in the log (counts.go): the writer knows it at w.last, as it
//     knows the ids, and adds the events of every record it appends or
//     learns.
//
// The window is rebuilt from the log at the first write: the ids of the
// records stored in the last window, with JetStream's timestamps.
//
// The same writer appends a stream's dead letters (see deadletter.go): its
// log is a subject of the shared dead-letter stream, so its
// compare-and-set is on the subject's last sequence instead of the
// stream's, and each record says how many letters it holds (countHeader).
type writer struct {
	l      *Log
	stream string // the Braid stream (for messages)
	target

	mu       sync.Mutex
	pending  []*writeReq
	flushing bool

	// Owned by the one flushing goroutine.
	loaded bool
	last   uint64     // the log's last sequence as far as the ids go
	count  eventCount // the running event count at last (counts.go; the clean log only)
	ids    *idWindow
	token  string
	n      uint64
	buf    []byte   // the record being built (reused)
	zbuf   []byte   // the record compressed (reused)
	chunk  []Record // its events (reused)
	keys   []idKey  // its ids (reused)
	todo   []item   // the group's events (reused)
}

// target is the log a writer appends to.
type target struct {
	name    string // the JetStream stream
	subject string // the subject of the log
	// perSubject: the subject shares its JetStream stream with others, so
	// the compare-and-set is on the subject's last sequence.
	perSubject bool
	// countHeader: every record carries its event count (CountHeader), so
	// a reader can count events from headers alone.
	countHeader bool
	// running: every record carries the running count of the log's events
	// (counts.go).
	running bool
}

type writeReq struct {
	recs []Record
	left int        // events not yet stored or dropped
	done chan error // buffered
}

// writerFor is the writer of partition p of a stream's clean log.
func (l *Log) writerFor(stream string, p int) *writer {
	return l.writerOf(stream, target{name: l.StreamName(stream, p), subject: l.Subject(stream, p), running: true})
}

// writerOf is the process's one writer of a log, made at the first use.
func (l *Log) writerOf(stream string, t target) *writer {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	w := l.writers[t.subject]
	if w == nil {
		w = &writer{l: l, stream: stream, target: t, ids: newIDWindow(l.opts.DedupWindow.Milliseconds()), token: nuid.Next()}
		l.writers[t.subject] = w
	}
	return w
}

// write queues recs and waits until they are stored.
func (w *writer) write(ctx context.Context, recs []Record) error {
	return w.submit(recs).wait(ctx)
}

// submit queues recs for writing without waiting: wait for the answer.
// The writer holds recs until their write is settled.
func (w *writer) submit(recs []Record) *writeReq {
	req := &writeReq{recs: recs, left: len(recs), done: make(chan error, 1)}
	w.mu.Lock()
	w.pending = append(w.pending, req)
	start := !w.flushing
	w.flushing = true
	w.mu.Unlock()
	if start {
		go w.flushLoop()
	}
	return req
}

// wait returns once the request's events are stored (nil) or failed.
func (r *writeReq) wait(ctx context.Context) error {
	select {
	case err := <-r.done:
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
		w.l.opts.Logger.Info("event log: dedup window loaded", "stream", w.stream, "subject", w.subject, "ids", w.ids.len(time.Now().UnixMilli()),
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

// publish appends one record of n events after w.last.
func (w *writer) publish(ctx context.Context, data []byte, n int) error {
	w.n++
	id := w.token + "." + strconv.FormatUint(w.n, 10)
	m := &nats.Msg{Subject: w.subject, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
	if w.countHeader {
		m.Header.Set(CountHeader, strconv.Itoa(n))
	}
	count := w.count
	if w.running {
		count = w.count.next(w.last+1, n)
		count.setHeader(m.Header)
	}
	expect := jetstream.WithExpectLastSequence(w.last)
	if w.perSubject {
		expect = jetstream.WithExpectLastSequencePerSubject(w.last)
	}
	for {
		// An attempt waits at most publishAttempt: a stream electing a
		// leader answers nothing, and the record is sent again (the same
		// message id: JetStream answers a copy it stored with the first
		// one's sequence) as soon as one may answer, within ctx.
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		ack, err := w.l.js.PublishMsg(actx, m, expect)
		cancel()
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
		// Unknown outcome: the record is the subject's first after w.last
		// or nowhere (any later publish of it would fail the expected
		// sequence, or be answered as the duplicate it is).
		if done, serr := w.settle(ctx, id, count); done {
			return serr
		}
		if ctx.Err() != nil {
			return classify(err)
		}
		select {
		case <-ctx.Done():
			return classify(err)
		case <-time.After(publishRetryWait):
		}
	}
}

// publishAttempt bounds one attempt to publish a record, publishRetryWait
// is the pause before the next when its outcome could not be told.
const (
	publishAttempt   = time.Second
	publishRetryWait = 100 * time.Millisecond
)

// settle tells the outcome of a publish of the record with message id id
// that got no answer, by reading the log at the expected place: done with
// nil (it is ours: w.last and w.count move to it), done with errConflict
// (another writer's record is there), or not done (nothing there yet, or
// the log could not be read: the record may be sent again).
func (w *writer) settle(ctx context.Context, id string, count eventCount) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, publishAttempt)
	defer cancel()
	s, err := w.l.js.Stream(rctx, w.name)
	if err != nil {
		return false, nil
	}
	var opts []jetstream.GetMsgOpt
	if w.perSubject {
		opts = append(opts, jetstream.WithGetMsgSubject(w.subject))
	}
	got, err := s.GetMsg(rctx, w.last+1, opts...)
	switch {
	case err == nil && got.Header.Get(jetstream.MsgIDHeader) == id:
		w.last, w.count = got.Sequence, count
		return true, nil
	case err == nil:
		return true, errConflict
	}
	return false, nil
}

// learn adds the ids of the records the window is missing and moves
// w.last to the log's last sequence: at the first write (first) those
// stored during the last window, later those another writer appended
// after w.last (whose events it adds to w.count). At the first write the
// count is the one of the log's last record; so it is when the log is
// found behind w.last (made again since, or a new leader answering before
// it applied what the old one acknowledged: then a publish after its last
// record fails the compare-and-set until it has, and learn reads on).
func (w *writer) learn(ctx context.Context, first bool) error {
	s, err := w.l.js.Stream(ctx, w.name)
	if err != nil {
		return fmt.Errorf("%w: stream %s: %v", ErrUnavailable, w.name, err)
	}
	last, empty, err := w.lastSeq(ctx, s)
	if err != nil {
		return err
	}
	if (first || last < w.last) && w.running {
		w.count = eventCount{}
		if !empty && last > 0 {
			m, err := s.GetMsg(ctx, last)
			switch {
			case err == nil:
				w.count, _ = countOf(m.Header)
			case !errors.Is(err, jetstream.ErrMsgNotFound):
				return fmt.Errorf("%w: stream %s record %d: %v", ErrUnavailable, w.name, last, err)
			}
		}
	}
	if empty || last == 0 || (!first && last <= w.last) {
		w.last = last
		return nil
	}
	from := w.last + 1
	if first {
		seq, found, err := w.l.firstStoredFrom(ctx, w.name, time.Now().Add(-w.l.opts.DedupWindow))
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUnavailable, w.name, err)
		}
		if !found {
			w.last = last
			return nil
		}
		from = seq
	}
	if err := w.read(ctx, s, from, last, !first && w.running); err != nil {
		return err
	}
	w.last = last
	return nil
}

// lastSeq is the last sequence the compare-and-set expects: the stream's
// (which stays when its records are removed), or the subject's last
// record's in a shared stream (0: none). empty: the log holds no record.
func (w *writer) lastSeq(ctx context.Context, s jetstream.Stream) (last uint64, empty bool, err error) {
	if w.perSubject {
		m, err := s.GetLastMsgForSubject(ctx, w.subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return 0, true, nil
		case err != nil:
			return 0, false, fmt.Errorf("%w: %s last record: %v", ErrUnavailable, w.subject, err)
		}
		return m.Sequence, false, nil
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("%w: stream %s info: %v", ErrUnavailable, w.name, err)
	}
	return info.State.LastSeq, info.State.Msgs == 0, nil
}

// read adds the ids of the log's records from sequence from up to last,
// and when count is set their events to w.count.
func (w *writer) read(ctx context.Context, s jetstream.Stream, from, last uint64, count bool) error {
	subject := ""
	if w.perSubject {
		// A clean partition's stream holds only its records (partition
		// 0's older ones under the stream's subject before partitions).
		subject = w.subject
	}
	return eachRecord(ctx, s, subject, from, last, false, func(r logRecord) error {
		t := r.time.UnixMilli()
		if w.countHeader && !packedRecord(r.data) {
			// A dead letter written before they were packed: its message
			// id is its id.
			if id := r.header.Get(jetstream.MsgIDHeader); id != "" {
				w.ids.add(w.ids.key(id), t)
			}
			return nil
		}
		if err := Unpack(r.data, func(_ int, id, _ []byte) error {
			if len(id) > 0 {
				w.ids.add(w.ids.keyBytes(id), t)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("eventlog: %s record %d: %w", w.subject, r.seq, err)
		}
		if count {
			w.count = w.count.learn(r.header, r.seq, Count(r.data))
		}
		return nil
	})
}
