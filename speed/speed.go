// Package speed is Braid's speed layer: a durable pull consumer per stream
// folds micro-batches of events into every view's in-memory delta with the
// logic package, commits deltas and position to the speed store in one
// atomic step, and only then acknowledges the batch. A redelivered batch is
// refused by the store's compare-and-set, so nothing is counted twice.
// While one micro-batch commits, the next is fetched and folded, taking
// what the log delivers until that commit is done (group commit: fewer,
// larger commits under load); its commit starts only once the previous one
// succeeded, from the position it wrote.
//
// Per stream (durable consumer "speed"):
//   - The store's position is the truth. Absent (first start, Redis lost):
//     Reset the stream's views and consume from the batch cutoff's arrival
//     time. Present: consume from position+1, skipping what it already holds.
//   - Only a contiguous prefix of the log is ever committed. Records that
//     arrive ahead of a missing one (delivered earlier to a process that
//     died) are held, unacknowledged, until it comes back.
//   - Too-late events (behind the watermark by more than the stream's
//     allowed lateness) are not folded; they are published to the late
//     subject before the commit and counted.
//   - ErrConflict (another writer moved the position, or Redis lost it)
//     drops the batch in hand and restarts the loop from the store.
//   - A writer lease in Redis keeps a second process on standby; it is an
//     optimisation only, correctness rests on the compare-and-set.
package speed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/speedstore"
)

// Config bounds the micro-batches. Zero fields take the Default* values.
type Config struct {
	Namespace string        // informational: the log and the store carry their own
	BatchSize int           // records per fetch (and per commit, but while a commit runs the next batch takes more)
	MaxWait   time.Duration // longest wait to fill a micro-batch
	Epoch     time.Duration // arrival-epoch length: must match the batch layer's
	MaxCells  int           // delta cells of a micro-batch before an early commit (one more batch may be committing)
}

// CutoffSource tells where a rebuild of a stream's speed state starts: the
// smallest batch cutoff among its views (unix ms, an epoch start; 0 = no
// batch yet: from the start of the log). The speed layer then folds exactly
// the records that arrived at or after it. A nil CutoffSource means 0.
type CutoffSource interface {
	StreamCutoff(ctx context.Context, stream string) (int64, error)
}

// StreamStatus is what the speed layer knows of one stream.
type StreamStatus struct {
	Seq        uint64    `json:"seq"`         // last committed sequence
	Watermark  int64     `json:"watermark"`   // largest event time seen, unix ms
	Lag        uint64    `json:"lag"`         // records in the log not yet delivered
	Late       uint64    `json:"late"`        // too-late events skipped since start
	LastCommit time.Time `json:"last_commit"` // zero before the first commit of this process
	Rebuilds   int       `json:"rebuilds"`    // times the state was rebuilt from the log
}

// Layer is the speed layer.
type Layer struct {
	cfg      Config
	log      *eventlog.Log
	store    *speedstore.Store
	cutoffs  CutoffSource
	cat      *config.Catalog
	logger   *slog.Logger
	m        *metrics
	owner    string
	leaseTTL time.Duration

	mu     sync.Mutex
	status map[string]*StreamStatus
}

// Defaults for Config fields left zero: the configuration's defaults.
const (
	DefaultBatchSize = defaults.SpeedBatchSize
	DefaultMaxWait   = defaults.SpeedMaxWait
	DefaultEpoch     = defaults.Epoch
	DefaultMaxCells  = defaults.SpeedMaxCells
)

// New builds the speed layer. Zero Config fields take the defaults above.
// logger may be nil (discarded) and reg may be nil (metrics unregistered);
// registering twice on one Registerer reuses the existing collectors.
func New(cfg Config, log *eventlog.Log, store *speedstore.Store, cutoffs CutoffSource, cat *config.Catalog, logger *slog.Logger, reg prometheus.Registerer) *Layer {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Epoch <= 0 {
		cfg.Epoch = DefaultEpoch
	}
	if cfg.MaxCells <= 0 {
		cfg.MaxCells = DefaultMaxCells
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	host, _ := os.Hostname()
	return &Layer{cfg: cfg, log: log, store: store, cutoffs: cutoffs, cat: cat, logger: logger, m: newMetrics(reg),
		owner:    fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b)),
		leaseTTL: max(5*time.Second, 4*cfg.MaxWait), status: map[string]*StreamStatus{}}
}

// Status returns a copy of every stream's status (for /v1/status). Safe for
// concurrent use.
func (l *Layer) Status() map[string]StreamStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]StreamStatus, len(l.status))
	for k, v := range l.status {
		out[k] = *v
	}
	return out
}

func (l *Layer) update(stream string, f func(*StreamStatus)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.status[stream]
	if st == nil {
		st = &StreamStatus{}
		l.status[stream] = st
	}
	f(st)
}

// Run consumes every stream of the catalog that has views, one goroutine
// per stream, until ctx ends; then each stream commits and acknowledges the
// micro-batch in hand and Run returns nil. A stream loop that fails (a
// position conflict, a Redis that lost its data, a NATS or Redis outage)
// starts again from the store's position after a pause that grows with
// consecutive failures. Run never returns an error of its own.
func (l *Layer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, name := range l.cat.StreamOrder {
		views := l.cat.ViewsOf(name)
		if len(views) == 0 {
			continue
		}
		l.update(name, func(*StreamStatus) {})
		l.m.leaseLost.WithLabelValues(name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			pause := 200 * time.Millisecond
			for ctx.Err() == nil {
				err := l.runStream(ctx, l.cat.Streams[name], views)
				if err == nil || ctx.Err() != nil {
					return
				}
				switch {
				case errors.Is(err, errStateLost):
					l.m.conflicts.WithLabelValues(name).Inc()
					l.logger.Warn("speed state lost (Redis emptied?); rebuilding from the log", "stream", name, "err", err)
					pause = 200 * time.Millisecond
				case errors.Is(err, speedstore.ErrConflict):
					l.m.conflicts.WithLabelValues(name).Inc()
					l.logger.Warn("position moved under us; realigning", "stream", name, "err", err)
					pause = 200 * time.Millisecond
				case errors.Is(err, errLeaseLost):
					l.m.leaseLost.WithLabelValues(name).Inc()
					l.logger.Warn("writer lease lost; standing by", "stream", name)
				default:
					l.logger.Error("speed stream failed; restarting", "stream", name, "err", err, "pause", pause)
				}
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
				pause = min(2*pause, 5*time.Second)
			}
		}()
	}
	wg.Wait()
	return nil
}

var (
	errStateLost = errors.New("speed: speed state lost")
	errLeaseLost = errors.New("speed: writer lease lost")
)

// acquire waits until this layer holds the stream's writer lease. It
// returns false when ctx ends first.
func (l *Layer) acquire(ctx context.Context, stream string) (bool, error) {
	standby := false
	for {
		ok, err := l.store.Lease(ctx, stream, l.owner, l.leaseTTL)
		if err != nil {
			return false, err
		}
		if ok {
			if standby {
				l.logger.Info("took over the stream", "stream", stream)
			}
			return true, nil
		}
		if !standby {
			l.logger.Info("another speed process owns the stream; standing by", "stream", stream)
			standby = true
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(l.leaseTTL / 5):
		}
	}
}

// batch is the micro-batch in hand: folded but not yet committed.
type batch struct {
	deltas   []*logic.Delta
	n        int // records folded (or skipped as late / undecodable) since the last commit
	folded   int // events folded into the deltas
	last     eventlog.Msg
	late     []eventlog.EventRef
	lateData [][]byte
}

func (b *batch) cells() int {
	n := 0
	for _, d := range b.deltas {
		n += d.Len()
	}
	return n
}

func newBatch(views []*logic.View) *batch {
	b := &batch{deltas: make([]*logic.Delta, len(views))}
	for i, v := range views {
		b.deltas[i] = v.NewDelta()
	}
	return b
}

func (b *batch) reset() {
	for _, d := range b.deltas {
		d.Reset()
	}
	b.n, b.folded, b.last = 0, 0, eventlog.Msg{}
	b.late, b.lateData = b.late[:0], b.lateData[:0]
}

// runStream is one incarnation of a stream's consume loop: lease, position,
// consumer, then micro-batches until ctx ends (nil) or something fails.
func (l *Layer) runStream(ctx context.Context, s *logic.Stream, views []*logic.View) error {
	ok, err := l.acquire(ctx, s.Name)
	if err != nil || !ok {
		return err
	}
	defer func() { _ = l.store.ReleaseLease(context.WithoutCancel(ctx), s.Name, l.owner) }()
	leased := time.Now()

	pos, found, err := l.store.Position(ctx, s.Name)
	if err != nil {
		return err
	}
	if found {
		// A position past the end of the log belongs to another log (the
		// NATS store was replaced while Redis kept its data): the state
		// counts events this log does not hold. Rebuild it.
		info, err := l.log.Info(ctx, s.Name)
		if err != nil {
			return err
		}
		if pos.Seq > info.LastSeq {
			l.logger.Warn("the speed position is past the end of the log (the log was replaced?); rebuilding from the log",
				"stream", s.Name, "position", pos.Seq, "log_last_seq", info.LastSeq)
			pos, found = speedstore.Position{}, false
		}
	}
	start := eventlog.Start{Seq: pos.Seq + 1}
	var freshFrom int64 // where a fresh position's views start (Commit)
	if found {
		rebuild, err := l.prepareViews(ctx, s, views, pos)
		if err != nil {
			return err
		}
		defer l.startRebuilds(ctx, s, rebuild)()
	} else {
		// First start, or Redis lost its data: rebuild everything after the
		// batch cutoff (the batch layer holds what arrived before it).
		keys := make([]string, len(views))
		for i, v := range views {
			keys[i] = v.StateKey()
		}
		if err := l.store.Reset(ctx, s.Name, keys); err != nil {
			return err
		}
		if l.cutoffs != nil {
			if freshFrom, err = l.cutoffs.StreamCutoff(ctx, s.Name); err != nil {
				return fmt.Errorf("speed: cutoff of %s: %w", s.Name, err)
			}
		}
		start = eventlog.Start{}
		if freshFrom > 0 {
			start.Time = time.UnixMilli(freshFrom)
		}
		// The records from freshFrom up to the log's end are refolded:
		// until the position reaches the last of them, the state misses
		// events acknowledged before (serving answers 503 meanwhile).
		info, err := l.log.Info(ctx, s.Name)
		if err != nil {
			return err
		}
		var target uint64
		if info.Msgs > 0 && !info.LastTime.Before(time.UnixMilli(freshFrom)) {
			target = info.LastSeq
		}
		// An empty first commit: the position exists and every view has
		// joined it before the first record arrives; the views are whole
		// once the position reaches the target.
		if err := l.store.Commit(ctx, s.Name, 0, speedstore.Position{Owner: l.owner, Target: target}, freshFrom, newBatch(views).deltas); err != nil {
			return err
		}
		l.logger.Info("no speed state: building it from the log", "stream", s.Name, "from_arrival", logic.FormatTime(freshFrom))
		l.update(s.Name, func(st *StreamStatus) { st.Rebuilds++ })
	}
	c, err := l.log.Consumer(ctx, s.Name, "speed", start, 4*l.cfg.BatchSize)
	if err != nil {
		return err
	}
	defer c.Close() // after the last flush: what is buffered goes back to the server
	l.update(s.Name, func(st *StreamStatus) { st.Seq, st.Watermark = pos.Seq, pos.Watermark })

	committed := pos.Seq  // what the store holds (0 when absent)
	expect := pos.Seq + 1 // the next record to fold: only a contiguous prefix is ever committed
	if !found {
		// A time-based start: a new consumer's ack floor is just below the
		// first record it delivers.
		expect = 0
		if info, err := c.Info(ctx); err == nil {
			expect = info.AckFloor + 1
		}
	}
	l.logger.Info("speed stream running", "stream", s.Name, "committed", committed, "expect", expect, "rebuild", !found)
	wm := logic.Watermark{Max: pos.Watermark}
	b, spare := newBatch(views), newBatch(views)
	lastCheck := time.Now()

	// A micro-batch is committed in the background while the next one is
	// fetched and folded: flush hands b over and goes on with a fresh batch;
	// settle waits for that commit. At most one commit is in flight, and
	// the next starts only after it succeeded, from the position it wrote,
	// so commits stay a chain of compare-and-sets.
	var (
		inflight *batch              // the batch being committed; nil when none
		nextPos  speedstore.Position // the position it commits
		result   = make(chan error, 1)
	)

	// settle waits for the commit in flight, if any; once it succeeded it
	// records the metrics and the status, and recycles the batch.
	settle := func() error {
		if inflight == nil {
			return nil
		}
		err := <-result
		p := inflight
		inflight = nil
		if err != nil {
			return err
		}
		committed = nextPos.Seq
		l.m.batchSize.Observe(float64(p.n))
		l.m.events.WithLabelValues(s.Name).Add(float64(p.folded))
		late := uint64(len(p.late))
		if late > 0 {
			l.m.late.WithLabelValues(s.Name).Add(float64(late))
			l.logger.Info("too-late events skipped", "stream", s.Name, "count", late, "watermark", logic.FormatTime(logic.Watermark{Max: nextPos.Watermark}.At(s.AllowedLateness)))
		}
		l.update(s.Name, func(st *StreamStatus) {
			st.Seq, st.Watermark, st.LastCommit = committed, nextPos.Watermark, time.Now()
			st.Late += late
		})
		p.reset()
		spare = p
		return nil
	}
	// busy reports whether a commit is still running.
	busy := func() bool { return inflight != nil && len(result) == 0 }
	// settleDone settles the commit in flight only if it has finished.
	settleDone := func() error {
		if busy() {
			return nil
		}
		return settle()
	}
	// A stream loop never leaves a commit running behind it (a next
	// incarnation starts from the store's position).
	defer func() { _ = settle() }()

	// flush settles the previous commit, then starts committing b: its
	// too-late records are published, then deltas and position are
	// committed in one step, then everything up to its last record is
	// acknowledged. The commit runs on a context of its own so a shutdown
	// still commits.
	flush := func() error {
		if err := settle(); err != nil {
			return err
		}
		p, prev := b, committed
		b, spare = spare, nil
		inflight = p
		nextPos = speedstore.Position{Seq: p.last.Seq, Watermark: wm.Max, Owner: l.owner}
		go func(next speedstore.Position) {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			t0 := time.Now()
			err := l.commit(fctx, s.Name, prev, next, freshFrom, p)
			if err == nil {
				l.m.commitSeconds.Observe(time.Since(t0).Seconds())
				// The state is committed with its position, so the ack is
				// only a hint to the server (fewer redeliveries): it is
				// sent at once, not waited for, and a lost one costs a
				// redelivery the position refuses.
				if err := c.AckNoWait(p.last); err != nil {
					l.logger.Warn("ack failed after commit", "stream", s.Name, "seq", p.last.Seq, "err", err)
				}
			}
			result <- err
		}(nextPos)
		return nil
	}

	// held keeps records delivered ahead of a gap (an earlier record is
	// still in flight: delivered to a previous incarnation or another
	// process, it comes back after the ack wait). They stay unacknowledged
	// and are folded once the gap fills; the consumer's max-ack-pending
	// bounds them.
	held := map[uint64]eventlog.Msg{}
	defer func() {
		for _, m := range held {
			_ = c.Nak(m, 0) // dropped: let them come back now, not after the ack wait
		}
	}()
	var gapSince, lastPosCheck time.Time

	for {
		if time.Since(leased) > l.leaseTTL/3 && ctx.Err() == nil {
			// (On shutdown, the Fetch below ends at once and the batch in
			// hand is committed.)
			ok, err := l.store.Lease(ctx, s.Name, l.owner, l.leaseTTL)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				return err
			case !ok:
				return errLeaseLost
			default:
				leased = time.Now()
			}
		}
		wait := l.cfg.MaxWait
		if b.n > 0 {
			// A batch waits for the commit in flight: take only what is
			// already buffered, then commit.
			wait = min(wait, time.Millisecond)
		}
		msgs, ferr := c.Fetch(ctx, l.cfg.BatchSize, wait)
		if ferr != nil && ctx.Err() == nil {
			return ferr
		}
		var skipped eventlog.Msg // the highest already-committed record delivered again
		for _, m := range msgs {
			switch {
			case m.Seq <= committed:
				if m.Seq > skipped.Seq {
					skipped = m
				}
			case expect == 0 || m.Seq >= expect:
				held[m.Seq] = m
			}
		}
		if expect == 0 && len(held) > 0 {
			expect = minSeq(held) // no ack floor known: the first delivered record
		}
		for {
			m, ok := held[expect]
			if !ok {
				break
			}
			delete(held, expect)
			expect++
			b.last = m
			b.n++
			l.m.lag.WithLabelValues(s.Name).Set(float64(m.Pending))
			epoch := logic.EpochOf(m.Arrival, l.cfg.Epoch)
			err := eventlog.Unpack(m.Data, func(i int, _, rec []byte) error {
				ev, err := s.Decode(rec)
				if err != nil {
					// Validated at ingest, so this is a bug: say so loudly.
					l.m.decodeErrors.WithLabelValues(s.Name).Inc()
					l.logger.Error("BUG: undecodable event in the clean log skipped", "stream", s.Name, "seq", m.Seq, "index", i, "err", err)
					return nil
				}
				if wm.TooLate(ev.Time, s.AllowedLateness) {
					b.late = append(b.late, eventlog.EventRef{Seq: m.Seq, Index: i})
					b.lateData = append(b.lateData, rec)
					return nil
				}
				wm.Observe(ev.Time, m.Arrival, s.WatermarkLead())
				for _, d := range b.deltas {
					d.Fold(epoch, &ev)
				}
				b.folded++
				return nil
			})
			if err != nil {
				l.m.decodeErrors.WithLabelValues(s.Name).Inc()
				l.logger.Error("BUG: malformed record in the clean log skipped", "stream", s.Name, "seq", m.Seq, "err", err)
			}
			if b.cells() > l.cfg.MaxCells {
				// Bounded memory: commit early (whole records only), keep going.
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if len(msgs) > 0 {
			pending := msgs[len(msgs)-1].Pending
			l.update(s.Name, func(st *StreamStatus) { st.Lag = pending })
		}
		switch {
		case b.n > 0 && busy() && len(msgs) > 0 && ctx.Err() == nil:
			// Group commit: the previous commit still runs, so the batch
			// takes what the log delivers meanwhile (MaxCells and the
			// consumer's max-ack-pending bound it) and commits once that
			// one is done: fewer, larger commits under load.
		case b.n > 0:
			// Commit even when ctx is cancelled: a shutdown flushes.
			if err := flush(); err != nil {
				return err
			}
		default:
			if err := settleDone(); err != nil {
				return err
			}
			if skipped.Seq != 0 {
				// Only records we already hold. Acknowledge them (ack-all)
				// once the store confirms they are in: after a Reset by
				// another process our committed position may be stale.
				p, ok, err := l.store.Position(ctx, s.Name)
				if err == nil && ok && p.Seq >= skipped.Seq {
					_ = c.Ack(context.WithoutCancel(ctx), skipped)
				}
			}
		}
		if ctx.Err() != nil {
			return settle()
		}
		if len(held) == 0 {
			gapSince = time.Time{}
		} else {
			if gapSince.IsZero() {
				gapSince = time.Now()
				l.logger.Debug("gap in delivery; holding back", "stream", s.Name, "want", expect, "held", len(held))
			}
			if err := settle(); err != nil { // the gap check compares the store with what we committed
				return err
			}
			next, err := l.checkGap(ctx, s.Name, committed, expect, held, gapSince, &lastPosCheck)
			if err != nil {
				return err
			}
			if next != expect {
				expect, gapSince = next, time.Time{}
				continue // fold what is held from the log's first record on
			}
		}
		if len(msgs) == 0 && wait == l.cfg.MaxWait {
			// Nothing new for a while: let the commit in flight finish, so
			// the status is current.
			if err := settle(); err != nil {
				return err
			}
		}
		if len(msgs) == 0 && time.Since(lastCheck) > time.Second {
			// Idle: notice a Redis that lost its data even without traffic.
			lastCheck = time.Now()
			if info, err := c.Info(ctx); err == nil {
				l.m.lag.WithLabelValues(s.Name).Set(float64(info.Pending))
				l.update(s.Name, func(st *StreamStatus) { st.Lag = info.Pending })
			}
			if committed > 0 {
				if _, ok, err := l.store.Position(ctx, s.Name); err == nil && !ok {
					return errStateLost
				}
			}
		}
	}
}

// commit publishes a batch's too-late records, then commits its deltas and
// the position next in one step (moving it from prev). A conflict while
// the store holds no position means the state was lost.
func (l *Layer) commit(ctx context.Context, stream string, prev uint64, next speedstore.Position, freshFrom int64, b *batch) error {
	if len(b.late) > 0 {
		if err := l.log.PublishLate(ctx, stream, b.late, b.lateData); err != nil {
			return err
		}
	}
	if err := l.store.Commit(ctx, stream, prev, next, freshFrom, b.deltas); err != nil {
		if errors.Is(err, speedstore.ErrConflict) && prev > 0 {
			if _, ok, perr := l.store.Position(ctx, stream); perr == nil && !ok {
				return fmt.Errorf("%w: %w", errStateLost, err)
			}
		}
		return err
	}
	return nil
}

// gapTimeout is how long a gap may stay open before the stream loop starts
// over (several ack waits: the missing record should have come back).
const gapTimeout = 20 * time.Second

// checkGap runs while records are held behind a missing one. It notices
// another writer moving the position (or Redis losing it), and records the
// log no longer has (then it returns the log's first sequence as the new
// expectation); a gap that stays open too long restarts the loop, which
// realigns the consumer.
func (l *Layer) checkGap(ctx context.Context, stream string, committed, expect uint64, held map[uint64]eventlog.Msg, since time.Time, lastCheck *time.Time) (uint64, error) {
	if time.Since(*lastCheck) < 500*time.Millisecond {
		return expect, nil
	}
	*lastCheck = time.Now()
	p, ok, err := l.store.Position(ctx, stream)
	if err != nil {
		return expect, err
	}
	if !ok && committed > 0 {
		return expect, errStateLost
	}
	if ok && p.Seq != committed {
		return expect, fmt.Errorf("%w: position is %d, we hold %d", speedstore.ErrConflict, p.Seq, committed)
	}
	if time.Since(since) < gapTimeout {
		return expect, nil
	}
	if info, err := l.log.Info(ctx, stream); err == nil && expect < info.FirstSeq {
		// The log dropped records (retention) before we read them: they are
		// gone for the speed layer too. Say so loudly and go on.
		l.logger.Error("records left the log before the speed layer read them", "stream", stream, "from", expect, "to", info.FirstSeq-1)
		return info.FirstSeq, nil
	}
	return expect, fmt.Errorf("speed: %s: record %d missing for %s with %d held after it; realigning", stream, expect, gapTimeout, len(held))
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

type metrics struct {
	events, late, decodeErrors, conflicts *prometheus.CounterVec
	leaseLost                             *prometheus.CounterVec
	lag                                   *prometheus.GaugeVec
	batchSize, commitSeconds              prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_events_total", Help: "Events folded into the speed store."}, []string{"stream"}),
		late:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_late_events_total", Help: "Too-late events skipped by the speed layer (the batch layer counts them)."}, []string{"stream"}),
		decodeErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_decode_errors_total", Help: "Log records the speed layer could not decode (a bug: they were validated at ingest)."}, []string{"stream"}),
		conflicts:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_conflicts_total", Help: "Commits refused because the position moved (redelivery, second writer, lost state)."}, []string{"stream"}),
		leaseLost:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_lease_lost_total", Help: "Times the speed layer found its writer lease of a stream taken by another process (it then stands by)."}, []string{"stream"}),
		lag:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "braid_speed_consumer_lag", Help: "Records in the log not yet delivered to the speed layer."}, []string{"stream"}),
		batchSize:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "braid_speed_batch_size", Help: "Records per committed micro-batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "braid_speed_commit_seconds", Help: "Latency of the atomic Redis commit.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		m.events = register(reg, m.events)
		m.late = register(reg, m.late)
		m.decodeErrors = register(reg, m.decodeErrors)
		m.conflicts = register(reg, m.conflicts)
		m.leaseLost = register(reg, m.leaseLost)
		m.lag = register(reg, m.lag)
		m.batchSize = register(reg, m.batchSize)
		m.commitSeconds = register(reg, m.commitSeconds)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name (a second Layer on the same registry shares the metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("speed: register metric: %v", err))
	}
	return c
}
