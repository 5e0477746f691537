package speed

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/speedstore"
)

// streamLoop is one incarnation of a stream partition's consume loop:
// what one partition needs — its stream's views, the log, the store — and
// the state its steps share. Its life:
//
//	open     read the position (or build a fresh one), open the consumer
//	         from it
//	run      then, until ctx ends or something fails, micro-batches:
//	  fetch    what the log delivers
//	  accept   keep the contiguous prefix after what was taken; hold
//	           records that arrive after a gap, unacknowledged
//	  fold     the prefix into the batch's deltas; too-late events aside
//	  commit   start committing the batch (flush) — or, while the previous
//	           commit runs, keep taking records into it (group commit)
//	  settle   wait for the commit in flight; acknowledged once committed
//	  gap      check a gap that stays open against the store and the log
//	  idle     with nothing to fetch, notice a lost state
//	close    hand back what is held, settle, close the consumer, stop
//	         the rebuilds
//
// A streamLoop is used by one goroutine (the commit in flight runs on its
// own and hands its result back through result) and is not reused: an
// error ends it, and the layer starts a new one from the store's position.
type streamLoop struct {
	l     *Layer // configuration, logger, metrics, owner, status
	log   eventLog
	store Store
	s     *logic.Stream
	p     int    // the partition of s this loop consumes
	part  string // p, as a metric label
	views []*logic.View
	ents  []*logic.Entity // the stream's entities (entities.go)

	// Set by open, fixed afterwards.
	c            Consumer
	freshFrom    int64  // where a fresh position's views start (Commit); 0 when the position was found
	entJoin      int64  // the epoch from which this loop's entity folds are complete (logic.EntityDelta.Join)
	stopRebuilds func() // stops the rebuilds of views that have not joined; nil when none run

	// accept: only a contiguous prefix of the log is ever committed.
	committed    uint64                  // what the store holds (0 when absent)
	expect       uint64                  // the next record to fold (0: the first delivered one)
	held         map[uint64]eventlog.Msg // delivered, not yet folded (ahead of a gap, or not yet taken)
	gapSince     time.Time               // when the current gap opened (zero: none)
	lastPosCheck time.Time               // last time a gap was checked against the store

	// fold
	wm       logic.Watermark
	b, spare *batch // the batch in hand, and a recycled one (nil while a commit runs)

	// commit and settle: at most one commit in flight, and the next starts
	// only after it succeeded, from the position it wrote, so commits stay
	// a chain of compare-and-sets.
	inflight *batch              // the batch being committed; nil when none
	dropped  *batch              // a batch whose commit failed: its records go back at close
	nextPos  speedstore.Position // the position it commits
	result   chan error          // its outcome

	lastCheck time.Time // last idle check
}

// newLoop returns the loop of partition p of a stream over the layer's
// log and store.
func (l *Layer) newLoop(s *logic.Stream, p int, views []*logic.View) *streamLoop {
	return &streamLoop{l: l, log: l.log, store: l.store, s: s, p: p, part: strconv.Itoa(p), views: views, ents: l.entitiesOf(s.Name),
		held: map[uint64]eventlog.Msg{}, result: make(chan error, 1)}
}

// runStream is one incarnation of a stream partition's consume loop:
// position, consumer, then micro-batches until ctx ends (nil) or something
// fails.
func (l *Layer) runStream(ctx context.Context, s *logic.Stream, p int, views []*logic.View) error {
	lp := l.newLoop(s, p, views)
	defer lp.close()
	if err := lp.open(ctx); err != nil {
		return err
	}
	return lp.run(ctx)
}

// batch is the micro-batch in hand: folded but not yet committed.
type batch struct {
	deltas   []*logic.Delta
	ents     []*logic.EntityDelta
	n        int // records folded (or skipped as late / undecodable) since the last commit
	folded   int // events folded into the deltas
	last     eventlog.Msg
	late     []eventlog.EventRef
	lateData [][]byte
	msgs     []eventlog.Msg // the records taken into it: handed back if it is dropped
}

func (b *batch) cells() int {
	n := 0
	for _, d := range b.deltas {
		n += d.Len()
	}
	for _, d := range b.ents {
		n += d.Len()
	}
	return n
}

func newBatch(views []*logic.View, ents []*logic.Entity, join int64) *batch {
	b := &batch{deltas: make([]*logic.Delta, len(views))}
	for i, v := range views {
		b.deltas[i] = v.NewDelta()
	}
	for _, e := range ents {
		d := e.NewDelta()
		d.Join = join
		b.ents = append(b.ents, d)
	}
	return b
}

func (b *batch) reset() {
	for _, d := range b.deltas {
		d.Reset()
	}
	for _, d := range b.ents {
		d.Reset()
	}
	b.n, b.folded, b.last = 0, 0, eventlog.Msg{}
	b.late, b.lateData = b.late[:0], b.lateData[:0]
	clear(b.msgs)
	b.msgs = b.msgs[:0]
}

// open reads the partition's position and opens the consumer after it.
// Without a position (first start, Redis lost its data, or a position past
// the end of the log) it resets the partition's views and commits a fresh,
// empty position, and the consumer starts at the batch cutoff's arrival
// time.
func (lp *streamLoop) open(ctx context.Context) error {
	l, s, views := lp.l, lp.s, lp.views
	pos, found, err := lp.store.Position(ctx, s.Name, lp.p)
	if err != nil {
		return err
	}
	if found {
		// A position past the end of the log belongs to another log (the
		// NATS store was replaced while Redis kept its data): the state
		// counts events this log does not hold. Rebuild it.
		info, err := lp.log.Info(ctx, s.Name, lp.p)
		if err != nil {
			return err
		}
		if pos.Seq > info.LastSeq {
			l.logger.Warn("the speed position is past the end of the log (the log was replaced?); rebuilding from the log",
				"stream", s.Name, "partition", lp.p, "position", pos.Seq, "log_last_seq", info.LastSeq)
			pos, found = speedstore.Position{}, false
		}
	}
	start := eventlog.Start{Seq: pos.Seq + 1}
	if found {
		rebuild, err := l.prepareViews(ctx, s, lp.p, views, pos)
		if err != nil {
			return err
		}
		lp.stopRebuilds = l.startRebuilds(ctx, s, lp.p, rebuild)
	} else {
		if start, err = lp.fresh(ctx); err != nil {
			return err
		}
	}
	c, err := lp.log.Consumer(ctx, s.Name, lp.p, "speed", start, 4*l.cfg.BatchSize)
	if err != nil {
		return err
	}
	lp.c = c
	l.update(s.Name, lp.p, func(st *PartitionStatus) {
		st.Seq, st.Watermark, st.LastArrival = pos.Seq, pos.Watermark, pos.LastArrival
	})

	lp.committed = pos.Seq  // what the store holds (0 when absent)
	lp.expect = pos.Seq + 1 // the next record to fold: only a contiguous prefix is ever committed
	if !found {
		// A time-based start: a new consumer's ack floor is just below the
		// first record it delivers.
		lp.expect = 0
		if info, err := c.Info(ctx); err == nil {
			lp.expect = info.AckFloor + 1
		}
	}
	l.logger.Info("speed stream running", "stream", s.Name, "partition", lp.p, "committed", lp.committed, "expect", lp.expect, "rebuild", !found)
	lp.wm = logic.Watermark{Max: pos.Watermark}
	if found {
		lp.entJoin = entityJoin(pos, l.cfg.Epoch)
	}
	lp.b, lp.spare = newBatch(views, lp.ents, lp.entJoin), newBatch(views, lp.ents, lp.entJoin)
	lp.lastCheck = time.Now()
	return nil
}

// fresh starts a partition's state over: first start, or Redis lost its
// data. It rebuilds everything after the batch cutoff (the batch layer
// holds what arrived before it): the views are reset and an empty first
// commit creates the position. It returns where the consumer starts.
// Partition 0 also drops the stream's state from before partitions, if
// the store holds any: it is rebuilt here.
func (lp *streamLoop) fresh(ctx context.Context) (eventlog.Start, error) {
	l, s, views := lp.l, lp.s, lp.views
	keys := make([]string, len(views))
	for i, v := range views {
		keys[i] = v.StateKey()
	}
	if d, ok := lp.store.(legacyDropper); ok && lp.p == 0 {
		if err := d.DropLegacy(ctx, s.Name, keys); err != nil {
			return eventlog.Start{}, err
		}
	}
	if err := lp.store.Reset(ctx, s.Name, lp.p, keys); err != nil {
		return eventlog.Start{}, err
	}
	if l.cutoffs != nil {
		var err error
		if lp.freshFrom, err = l.cutoffs.StreamCutoff(ctx, s.Name); err != nil {
			return eventlog.Start{}, fmt.Errorf("speed: cutoff of %s: %w", s.Name, err)
		}
	}
	start := eventlog.Start{}
	if lp.freshFrom > 0 {
		start.Time = time.UnixMilli(lp.freshFrom)
	}
	// The records from freshFrom up to the log's end are refolded: until
	// the position reaches the last of them, the state misses events
	// acknowledged before (serving answers 503 meanwhile).
	info, err := lp.log.Info(ctx, s.Name, lp.p)
	if err != nil {
		return eventlog.Start{}, err
	}
	var target uint64
	if info.Msgs > 0 && !info.LastTime.Before(time.UnixMilli(lp.freshFrom)) {
		target = info.LastSeq
	}
	// An empty first commit: the position exists and every view has
	// joined it before the first record arrives; the views are whole once
	// the position reaches the target.
	empty := newBatch(views, lp.ents, lp.freshFrom)
	if err := lp.store.Commit(ctx, s.Name, lp.p, 0, speedstore.Position{Owner: l.owner, Target: target}, lp.freshFrom, empty.deltas, empty.ents...); err != nil {
		return eventlog.Start{}, err
	}
	l.logger.Info("no speed state: building it from the log", "stream", s.Name, "partition", lp.p, "from_arrival", logic.FormatTime(lp.freshFrom))
	l.update(s.Name, lp.p, func(st *PartitionStatus) { st.Rebuilds++ })
	return start, nil
}

// close ends the incarnation: the commit in flight is waited for (a next
// incarnation starts from the store's position), every record taken and
// not committed is handed back — held ones, those of a batch whose commit
// failed, those of the batch in hand — so that they come again now, not
// after the ack wait (a Redis failover, a lost NATS leader: the next
// incarnation goes on at once), the consumer is closed (what it buffers
// goes back to the server) and the rebuilds are stopped.
func (lp *streamLoop) close() {
	if lp.c != nil {
		_ = lp.settle()
		for _, m := range lp.held {
			_ = lp.c.Nak(m, 0)
		}
		for _, b := range []*batch{lp.dropped, lp.b} {
			if b == nil {
				continue
			}
			for _, m := range b.msgs {
				_ = lp.c.Nak(m, 0)
			}
		}
		lp.c.Close()
	}
	if lp.stopRebuilds != nil {
		lp.stopRebuilds()
	}
}

// run consumes micro-batches until ctx ends (then the batch in hand is
// committed and run returns nil) or a step fails.
func (lp *streamLoop) run(ctx context.Context) error {
	cfg := lp.l.cfg
	for {
		wait := cfg.MaxWait
		if lp.b.n > 0 {
			// A batch waits for the commit in flight: take only what is
			// already buffered, then commit.
			wait = min(wait, time.Millisecond)
		}
		msgs, ferr := lp.c.Fetch(ctx, cfg.BatchSize, wait)
		if ferr != nil && ctx.Err() == nil {
			return ferr
		}
		skipped := lp.accept(msgs)
		if err := lp.foldAccepted(ctx); err != nil {
			return err
		}
		if len(msgs) > 0 {
			pending := msgs[len(msgs)-1].Pending
			lp.l.update(lp.s.Name, lp.p, func(st *PartitionStatus) { st.Lag = pending })
		}
		if err := lp.commitStep(ctx, len(msgs), skipped); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return lp.settle()
		}
		refold, err := lp.gap(ctx)
		if err != nil {
			return err
		}
		if refold {
			continue // fold what is held from the log's first record on
		}
		if err := lp.idle(ctx, len(msgs), wait); err != nil {
			return err
		}
	}
}

// accept takes delivered records in: those after what was taken are held
// (a record that arrives ahead of a missing one — delivered earlier to a
// previous incarnation or another process, it comes back after the ack
// wait — stays held, unacknowledged, until the gap fills; the consumer's
// max-ack-pending bounds them). It returns the highest record delivered
// again that the store already holds (zero when none); records taken but
// not yet committed that come again are dropped.
func (lp *streamLoop) accept(msgs []eventlog.Msg) (skipped eventlog.Msg) {
	for _, m := range msgs {
		switch {
		case m.Seq <= lp.committed:
			if m.Seq > skipped.Seq {
				skipped = m
			}
		case lp.expect == 0 || m.Seq >= lp.expect:
			lp.held[m.Seq] = m
		}
	}
	if lp.expect == 0 && len(lp.held) > 0 {
		lp.expect = minSeq(lp.held) // no ack floor known: the first delivered record
	}
	return skipped
}

// take returns the next record of the contiguous prefix, if it is held.
func (lp *streamLoop) take() (eventlog.Msg, bool) {
	m, ok := lp.held[lp.expect]
	if !ok {
		return m, false
	}
	delete(lp.held, lp.expect)
	lp.expect++
	return m, true
}

// foldAccepted folds the contiguous prefix held into the batch in hand,
// committing early (whole records only) when its deltas grow past
// MaxCells: bounded memory.
func (lp *streamLoop) foldAccepted(ctx context.Context) error {
	for {
		m, ok := lp.take()
		if !ok {
			return nil
		}
		lp.fold(m)
		if lp.b.cells() > lp.l.cfg.MaxCells {
			if err := lp.flush(ctx); err != nil {
				return err
			}
		}
	}
}

// fold adds one record to the batch in hand: each of its events is folded
// into every view's delta and moves the watermark, unless it is too late
// (behind the watermark by more than the stream's allowed lateness): then
// it is set aside for the late subject. An event or a record that does
// not decode (a bug: the clean log was validated at ingest) is skipped and
// counted.
func (lp *streamLoop) fold(m eventlog.Msg) {
	l, s, b := lp.l, lp.s, lp.b
	b.last = m
	b.msgs = append(b.msgs, m)
	b.n++
	l.m.lag.WithLabelValues(s.Name, lp.part).Set(float64(m.Pending))
	epoch := logic.EpochOf(m.Arrival, l.cfg.Epoch)
	err := eventlog.Unpack(m.Data, func(i int, _, rec []byte) error {
		ev, err := s.Decode(rec)
		if err != nil {
			// Validated at ingest, so this is a bug: say so loudly.
			l.m.decodeErrors.WithLabelValues(s.Name).Inc()
			l.logger.Error("BUG: undecodable event in the clean log skipped", "stream", s.Name, "seq", m.Seq, "index", i, "err", err)
			return nil
		}
		// Entities take every event, too-late ones too: they keep events,
		// not windows, and the speed side holds what arrived after the
		// batch cutoff.
		for _, d := range b.ents {
			d.Fold(epoch, m.Arrival, lp.p, m.Seq, i, &ev)
		}
		if lp.wm.TooLate(ev.Time, s.AllowedLateness) {
			b.late = append(b.late, eventlog.EventRef{Part: lp.p, Seq: m.Seq, Index: i})
			b.lateData = append(b.lateData, rec)
			return nil
		}
		lp.wm.Observe(ev.Time, m.Arrival, s.WatermarkLead())
		at := logic.LogPos{Arrival: m.Arrival, Part: lp.p, Seq: m.Seq, Index: i}
		for _, d := range b.deltas {
			d.FoldAt(epoch, at, &ev)
		}
		b.folded++
		return nil
	})
	if err != nil {
		l.m.decodeErrors.WithLabelValues(s.Name).Inc()
		l.logger.Error("BUG: malformed record in the clean log skipped", "stream", s.Name, "seq", m.Seq, "err", err)
	}
}

// commitStep decides what becomes of the batch in hand after a fetch of
// fetched records: while the previous commit still runs and records keep
// coming, the batch keeps taking them (group commit: fewer, larger
// commits under load; MaxCells and the consumer's max-ack-pending bound
// it); otherwise a batch with records is committed — even when ctx is
// cancelled: a shutdown flushes. With nothing in hand, a finished commit
// is settled, and records delivered again that the store holds
// (skipped) are acknowledged.
func (lp *streamLoop) commitStep(ctx context.Context, fetched int, skipped eventlog.Msg) error {
	switch {
	case lp.b.n > 0 && lp.busy() && fetched > 0 && ctx.Err() == nil:
	case lp.b.n > 0:
		return lp.flush(ctx)
	default:
		if err := lp.settleDone(); err != nil {
			return err
		}
		if skipped.Seq != 0 {
			// Only records we already hold. Acknowledge them (ack-all)
			// once the store confirms they are in: after a Reset by
			// another process our committed position may be stale.
			p, ok, err := lp.store.Position(ctx, lp.s.Name, lp.p)
			if err == nil && ok && p.Seq >= skipped.Seq {
				_ = lp.c.Ack(context.WithoutCancel(ctx), skipped)
			}
		}
	}
	return nil
}

// flush settles the previous commit, then starts committing the batch in
// hand in the background (commitAsync) and goes on with a fresh batch.
func (lp *streamLoop) flush(ctx context.Context) error {
	if err := lp.settle(); err != nil {
		return err
	}
	p, prev := lp.b, lp.committed
	lp.b, lp.spare = lp.spare, nil
	lp.inflight = p
	lp.nextPos = speedstore.Position{Seq: p.last.Seq, Watermark: lp.wm.Max, LastArrival: p.last.Arrival, Owner: lp.l.owner}
	go lp.commitAsync(ctx, p, prev, lp.nextPos)
	return nil
}

// commitAsync commits p (moving the position from prev to next), then
// acknowledges everything up to its last record, and hands the outcome to
// settle. The commit runs on a context of its own so a shutdown still
// commits. It reads only what open fixed.
func (lp *streamLoop) commitAsync(ctx context.Context, p *batch, prev uint64, next speedstore.Position) {
	l := lp.l
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	err := lp.commit(fctx, prev, next, p)
	if err == nil {
		l.m.commitSeconds.Observe(time.Since(t0).Seconds())
		// The state is committed with its position, so the ack is only a
		// hint to the server (fewer redeliveries): it is sent at once, not
		// waited for, and a lost one costs a redelivery the position
		// refuses.
		if err := lp.c.AckNoWait(p.last); err != nil {
			l.logger.Warn("ack failed after commit", "stream", lp.s.Name, "seq", p.last.Seq, "err", err)
		}
	}
	lp.result <- err
}

// commit publishes a batch's too-late records, then commits its deltas and
// the position next in one step (moving it from prev). A conflict while
// the store holds no position means the state was lost.
func (lp *streamLoop) commit(ctx context.Context, prev uint64, next speedstore.Position, b *batch) error {
	stream := lp.s.Name
	if len(b.late) > 0 {
		if err := lp.log.PublishLate(ctx, stream, b.late, b.lateData); err != nil {
			return err
		}
	}
	if err := lp.store.Commit(ctx, stream, lp.p, prev, next, lp.freshFrom, b.deltas, b.ents...); err != nil {
		if errors.Is(err, speedstore.ErrConflict) && prev > 0 {
			if _, ok, perr := lp.store.Position(ctx, stream, lp.p); perr == nil && !ok {
				return fmt.Errorf("%w: %w", errStateLost, err)
			}
		}
		return err
	}
	return nil
}

// settle waits for the commit in flight, if any; once it succeeded it
// records the metrics and the status, and recycles the batch. Its error is
// the commit's: the batch is dropped and the loop must start again from
// the store.
func (lp *streamLoop) settle() error {
	if lp.inflight == nil {
		return nil
	}
	l, s := lp.l, lp.s
	err := <-lp.result
	p := lp.inflight
	lp.inflight = nil
	if err != nil {
		lp.dropped = p
		return err
	}
	lp.committed = lp.nextPos.Seq
	l.m.batchSize.Observe(float64(p.n))
	l.m.events.WithLabelValues(s.Name, lp.part).Add(float64(p.folded))
	late := uint64(len(p.late))
	if late > 0 {
		l.m.late.WithLabelValues(s.Name, lp.part).Add(float64(late))
		l.logger.Info("too-late events skipped", "stream", s.Name, "partition", lp.p, "count", late, "watermark", logic.FormatTime(logic.Watermark{Max: lp.nextPos.Watermark}.At(s.AllowedLateness)))
	}
	next := lp.nextPos
	l.update(s.Name, lp.p, func(st *PartitionStatus) {
		st.Seq, st.Watermark, st.LastArrival, st.LastCommit = next.Seq, next.Watermark, next.LastArrival, time.Now()
		st.Late += late
	})
	p.reset()
	lp.spare = p
	return nil
}

// busy reports whether a commit is still running.
func (lp *streamLoop) busy() bool { return lp.inflight != nil && len(lp.result) == 0 }

// settleDone settles the commit in flight only if it has finished.
func (lp *streamLoop) settleDone() error {
	if lp.busy() {
		return nil
	}
	return lp.settle()
}

// gap runs after each fetch: while records are held behind a missing one
// it settles (the check compares the store with what was committed) and
// checks the gap (checkGap). It returns true when the records the log
// dropped were passed over: what is held is to be folded at once.
func (lp *streamLoop) gap(ctx context.Context) (refold bool, err error) {
	if len(lp.held) == 0 {
		lp.gapSince = time.Time{}
		return false, nil
	}
	if lp.gapSince.IsZero() {
		lp.gapSince = time.Now()
		lp.l.logger.Debug("gap in delivery; holding back", "stream", lp.s.Name, "partition", lp.p, "want", lp.expect, "held", len(lp.held))
	}
	if err := lp.settle(); err != nil {
		return false, err
	}
	next, err := lp.checkGap(ctx)
	if err != nil {
		return false, err
	}
	if next != lp.expect {
		lp.expect, lp.gapSince = next, time.Time{}
		return true, nil
	}
	return false, nil
}

// gapTimeout is how long a gap may stay open before the stream loop starts
// over (several ack waits: the missing record should have come back).
const gapTimeout = 20 * time.Second

// checkGap runs while records are held behind a missing one, at most
// every 500ms. It notices another writer moving the position (or Redis
// losing it), and records the log no longer has (then it returns the log's
// first sequence as the new expectation); a gap that stays open too long
// restarts the loop, which realigns the consumer.
func (lp *streamLoop) checkGap(ctx context.Context) (uint64, error) {
	stream, expect := lp.s.Name, lp.expect
	if time.Since(lp.lastPosCheck) < 500*time.Millisecond {
		return expect, nil
	}
	lp.lastPosCheck = time.Now()
	p, ok, err := lp.store.Position(ctx, stream, lp.p)
	if err != nil {
		return expect, err
	}
	if !ok && lp.committed > 0 {
		return expect, errStateLost
	}
	if ok && p.Seq != lp.committed {
		return expect, fmt.Errorf("%w: position is %d, we hold %d", speedstore.ErrConflict, p.Seq, lp.committed)
	}
	if time.Since(lp.gapSince) < gapTimeout {
		return expect, nil
	}
	if info, err := lp.log.Info(ctx, stream, lp.p); err == nil && expect < info.FirstSeq {
		// The log dropped records (retention) before we read them: they are
		// gone for the speed layer too. Say so loudly and go on.
		lp.l.logger.Error("records left the log before the speed layer read them", "stream", stream, "partition", lp.p, "from", expect, "to", info.FirstSeq-1)
		return info.FirstSeq, nil
	}
	return expect, fmt.Errorf("speed: %s partition %d: record %d missing for %s with %d held after it; realigning", stream, lp.p, expect, gapTimeout, len(lp.held))
}

// idle runs after a fetch of fetched records that waited wait: with
// nothing new for a while, the commit in flight is let finish (so the
// status is current); idle for over a second, the lag is refreshed and a
// Redis that lost its data is noticed even without traffic.
func (lp *streamLoop) idle(ctx context.Context, fetched int, wait time.Duration) error {
	if fetched == 0 && wait == lp.l.cfg.MaxWait {
		if err := lp.settle(); err != nil {
			return err
		}
	}
	if fetched == 0 && time.Since(lp.lastCheck) > time.Second {
		lp.lastCheck = time.Now()
		if info, err := lp.c.Info(ctx); err == nil {
			lp.l.m.lag.WithLabelValues(lp.s.Name, lp.part).Set(float64(info.Pending))
			lp.l.update(lp.s.Name, lp.p, func(st *PartitionStatus) { st.Lag = info.Pending })
		}
		if lp.committed > 0 {
			if _, ok, err := lp.store.Position(ctx, lp.s.Name, lp.p); err == nil && !ok {
				return errStateLost
			}
		}
	}
	return nil
}

func minSeq(held map[uint64]eventlog.Msg) uint64 {
	var m uint64
	for s := range held {
		if m == 0 || s < m {
			m = s
		}
	}
	return m
}
