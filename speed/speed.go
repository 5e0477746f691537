// Package speed is Braid's speed layer: a durable pull consumer per stream
// folds micro-batches of events into every view's in-memory delta with the
// logic package, commits deltas and position to the speed store in one
// atomic step, and only then acknowledges the batch. A redelivered batch is
// refused by the store's compare-and-set, so nothing is counted twice.
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
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/speedstore"
)

// Config bounds the micro-batches.
type Config struct {
	Namespace string
	BatchSize int           // records per fetch and commit at most
	MaxWait   time.Duration // longest wait to fill a micro-batch
	Epoch     time.Duration // arrival-epoch length
	MaxCells  int           // delta cells before an early commit
}

// CutoffSource tells where a rebuild of a stream's speed state starts: the
// smallest batch cutoff among its views (unix ms, 0 = no batch: from the
// start of the log).
type CutoffSource interface {
	StreamCutoff(ctx context.Context, stream string) (int64, error)
}

// StreamStatus is what the speed layer knows of one stream.
type StreamStatus struct {
	Seq        uint64    `json:"seq"`       // last committed sequence
	Watermark  int64     `json:"watermark"` // largest event time seen, unix ms
	Lag        uint64    `json:"lag"`       // records in the log not yet delivered
	Late       uint64    `json:"late"`      // too-late events skipped since start
	LastCommit time.Time `json:"last_commit"`
	Rebuilds   int       `json:"rebuilds"` // times the state was rebuilt from the log
}

// Layer is the speed layer.
type Layer struct {
	cfg     Config
	log     *eventlog.Log
	store   *speedstore.Store
	cutoffs CutoffSource
	cat     *config.Catalog
	logger  *slog.Logger
	m       *metrics
	owner   string

	mu     sync.Mutex
	status map[string]*StreamStatus
}

// New builds the speed layer. reg may be nil.
func New(cfg Config, log *eventlog.Log, store *speedstore.Store, cutoffs CutoffSource, cat *config.Catalog, logger *slog.Logger, reg prometheus.Registerer) *Layer {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 2000
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 100 * time.Millisecond
	}
	if cfg.MaxCells <= 0 {
		cfg.MaxCells = 50000
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	host, _ := os.Hostname()
	return &Layer{cfg: cfg, log: log, store: store, cutoffs: cutoffs, cat: cat, logger: logger, m: newMetrics(reg),
		owner: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b)), status: map[string]*StreamStatus{}}
}

// Status returns a copy of every stream's status.
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

// Run consumes every stream that has views until ctx ends, then commits and
// acknowledges what is in hand and returns nil. A stream whose loop fails
// (a conflict, a lost Redis, a NATS outage) restarts from the store's
// position after a short pause.
func (l *Layer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, name := range l.cat.StreamOrder {
		views := l.cat.ViewsOf(name)
		if len(views) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := l.runStream(ctx, l.cat.Streams[name], views)
				if err == nil || ctx.Err() != nil {
					return
				}
				if errors.Is(err, speedstore.ErrConflict) {
					l.m.conflicts.WithLabelValues(name).Inc()
					l.logger.Warn("position moved under us; realigning", "stream", name, "err", err)
				} else {
					l.logger.Error("speed stream failed; restarting", "stream", name, "err", err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

var errStateLost = errors.New("speed: speed state lost")

const leaseTTL = 5 * time.Second

var errLeaseLost = errors.New("speed: writer lease lost")

// runStream is one incarnation of a stream's consume loop. It waits in
// standby until it holds the stream's writer lease.
func (l *Layer) runStream(ctx context.Context, s *logic.Stream, views []*logic.View) error {
	standby := false
	for {
		ok, err := l.store.Lease(ctx, s.Name, l.owner, leaseTTL)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		if !standby {
			l.logger.Info("another speed process owns the stream; standing by", "stream", s.Name)
			standby = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(leaseTTL / 5):
		}
	}
	defer func() { _ = l.store.ReleaseLease(context.WithoutCancel(ctx), s.Name, l.owner) }()
	leased := time.Now()
	pos, found, err := l.store.Position(ctx, s.Name)
	if err != nil {
		return err
	}
	start := eventlog.Start{Seq: pos.Seq + 1}
	if !found {
		names := make([]string, len(views))
		for i, v := range views {
			names[i] = v.Name
		}
		if err := l.store.Reset(ctx, s.Name, names); err != nil {
			return err
		}
		cutoff, err := l.cutoffs.StreamCutoff(ctx, s.Name)
		if err != nil {
			return err
		}
		start = eventlog.Start{}
		if cutoff > 0 {
			start.Time = time.UnixMilli(cutoff)
		}
		l.logger.Info("no speed state: building it from the log", "stream", s.Name, "from_cutoff", logic.FormatTime(cutoff))
		l.update(s.Name, func(st *StreamStatus) { st.Rebuilds++ })
	}
	c, err := l.log.Consumer(ctx, s.Name, "speed", start, 4*l.cfg.BatchSize)
	if err != nil {
		return err
	}
	l.update(s.Name, func(st *StreamStatus) { st.Seq, st.Watermark = pos.Seq, pos.Watermark })

	committed := pos.Seq // what the store holds (0 when absent)
	expect := pos.Seq + 1
	if !found {
		expect = 0 // a time-based start: the first delivered record sets it
	}
	wm := logic.Watermark{Max: pos.Watermark}
	deltas := make([]*logic.Delta, len(views))
	for i, v := range views {
		deltas[i] = v.NewDelta()
	}
	var lateSeqs []uint64
	var lateData [][]byte
	lastCheck := time.Now()

	flush := func(fctx context.Context, last eventlog.Msg, n int) error {
		t0 := time.Now()
		if len(lateSeqs) > 0 {
			if err := l.log.PublishLate(fctx, s.Name, lateSeqs, lateData); err != nil {
				return err
			}
		}
		next := speedstore.Position{Seq: last.Seq, Watermark: wm.Max, Owner: l.owner}
		if err := l.store.Commit(fctx, s.Name, committed, next, deltas); err != nil {
			if errors.Is(err, speedstore.ErrConflict) && committed > 0 {
				if _, ok, perr := l.store.Position(fctx, s.Name); perr == nil && !ok {
					return fmt.Errorf("%w: %v", errStateLost, err)
				}
			}
			return err
		}
		committed = last.Seq
		if err := c.Ack(fctx, last); err != nil {
			// The state is committed; a redelivery will be refused. Log and go on.
			l.logger.Warn("ack failed after commit", "stream", s.Name, "seq", last.Seq, "err", err)
		}
		l.m.batchSize.Observe(float64(n))
		l.m.commitSeconds.Observe(time.Since(t0).Seconds())
		l.m.events.WithLabelValues(s.Name).Add(float64(n))
		late := uint64(len(lateSeqs))
		l.m.late.WithLabelValues(s.Name).Add(float64(late))
		l.update(s.Name, func(st *StreamStatus) {
			st.Seq, st.Watermark, st.LastCommit = last.Seq, wm.Max, time.Now()
			st.Late += late
		})
		for _, d := range deltas {
			d.Reset()
		}
		lateSeqs, lateData = lateSeqs[:0], lateData[:0]
		return nil
	}

	for {
		if time.Since(leased) > leaseTTL/3 {
			ok, err := l.store.Lease(ctx, s.Name, l.owner, leaseTTL)
			if err != nil && ctx.Err() == nil {
				return err
			}
			if !ok && ctx.Err() == nil {
				return errLeaseLost
			}
			leased = time.Now()
		}
		msgs, ferr := c.Fetch(ctx, l.cfg.BatchSize, l.cfg.MaxWait)
		if ferr != nil && ctx.Err() == nil {
			return ferr
		}
		var last eventlog.Msg
		n := 0
		cells := 0
		for i, m := range msgs {
			if m.Seq <= committed {
				last = m // already in the store: acknowledge it with the rest
				continue
			}
			if expect != 0 && m.Seq != expect {
				// A gap: an earlier record is still in flight. Only a
				// contiguous prefix is ever committed; the rest comes again.
				l.logger.Debug("gap in delivery; holding back", "stream", s.Name, "want", expect, "got", m.Seq)
				for _, r := range msgs[i:] {
					_ = c.Nak(r, 50*time.Millisecond)
				}
				if p, ok, err := l.store.Position(ctx, s.Name); err == nil && ok && p.Seq != committed && n == 0 {
					// Another writer moved the position: realign to it.
					return fmt.Errorf("%w: position moved to %d", speedstore.ErrConflict, p.Seq)
				}
				break
			}
			expect = m.Seq + 1
			last = m
			n++
			ev, err := s.Decode(m.Data)
			if err != nil {
				l.m.decodeErrors.WithLabelValues(s.Name).Inc()
				l.logger.Error("undecodable record skipped", "stream", s.Name, "seq", m.Seq, "err", err)
				continue
			}
			if wm.TooLate(ev.Time, s.AllowedLateness) {
				lateSeqs = append(lateSeqs, m.Seq)
				lateData = append(lateData, m.Data)
				continue
			}
			wm.Observe(ev.Time)
			epoch := logic.EpochOf(m.Arrival, l.cfg.Epoch)
			for _, d := range deltas {
				d.Fold(epoch, &ev)
			}
			if cells++; cells%256 == 0 && totalCells(deltas) > l.cfg.MaxCells {
				// Bounded memory: commit early, keep going.
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				err := flush(fctx, m, n)
				cancel()
				if err != nil {
					return err
				}
				n = 0
			}
			l.m.lag.WithLabelValues(s.Name).Set(float64(m.Pending))
			l.update(s.Name, func(st *StreamStatus) { st.Lag = m.Pending })
		}
		if last.Seq != 0 && last.Seq > committed {
			// Commit even when ctx is cancelled: graceful shutdown flushes.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			err := flush(fctx, last, n)
			cancel()
			if err != nil {
				return err
			}
		} else if last.Seq != 0 {
			_ = c.Ack(context.WithoutCancel(ctx), last)
		}
		if ctx.Err() != nil {
			return nil
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

func totalCells(ds []*logic.Delta) int {
	n := 0
	for _, d := range ds {
		n += d.Len()
	}
	return n
}

type metrics struct {
	events, late, decodeErrors, conflicts *prometheus.CounterVec
	lag                                   *prometheus.GaugeVec
	batchSize, commitSeconds              prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_events_total", Help: "Records folded and committed by the speed layer."}, []string{"stream"}),
		late:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_late_events_total", Help: "Too-late events skipped by the speed layer (the batch layer counts them)."}, []string{"stream"}),
		decodeErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_decode_errors_total", Help: "Log records the speed layer could not decode."}, []string{"stream"}),
		conflicts:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_conflicts_total", Help: "Commits refused because the position moved (redelivery, second writer, lost state)."}, []string{"stream"}),
		lag:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "braid_speed_consumer_lag", Help: "Records in the log not yet delivered to the speed layer."}, []string{"stream"}),
		batchSize:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "braid_speed_batch_size", Help: "Records per committed micro-batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "braid_speed_commit_seconds", Help: "Latency of the atomic Redis commit.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.events, m.late, m.decodeErrors, m.conflicts, m.lag, m.batchSize, m.commitSeconds)
	}
	return m
}
