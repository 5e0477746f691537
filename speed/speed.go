// Package speed is Braid's speed layer: a durable pull consumer per stream
// partition folds micro-batches of events into every view's in-memory
// delta with the logic package, commits deltas and position to the speed
// store in one atomic step, and only then acknowledges the batch. A
// redelivered batch is refused by the store's compare-and-set, so nothing
// is counted twice. While one micro-batch commits, the next is fetched and
// folded, taking what the log delivers until that commit is done (group
// commit: fewer, larger commits under load); its commit starts only once
// the previous one succeeded, from the position it wrote.
//
// Per partition of a stream (durable consumer "speed" on the partition's
// log):
//   - The partitions are shared out among the running speed processes
//     (Shares: leases in Redis); a process runs the loops of the
//     partitions it owns, and one that stops or dies hands them over. The
//     shares are an optimisation only: correctness rests on the
//     compare-and-set.
//   - The store's position is the truth. Absent (first start, Redis lost):
//     Reset the partition's views and consume from the batch cutoff's
//     arrival time. Present: consume from position+1, skipping what it
//     already holds.
//   - Only a contiguous prefix of the log is ever committed. Records that
//     arrive ahead of a missing one (delivered earlier to a process that
//     died) are held, unacknowledged, until it comes back.
//   - Too-late events (behind the watermark by more than the stream's
//     allowed lateness) are not folded; they are published to the late
//     subject before the commit and counted.
//   - ErrConflict (another writer moved the position, or Redis lost it)
//     drops the batch in hand and restarts the loop from the store.
package speed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/leases"
	sharedmetrics "github.com/braid-data/braid/storage/metrics"
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

// StreamStatus is what this process knows of one stream: its partitions,
// in order.
type StreamStatus struct {
	Partitions []PartitionStatus `json:"partitions"`
}

// PartitionStatus is what this process knows of one partition of a
// stream: current while it runs the partition (Owner set), as it last saw
// it otherwise.
type PartitionStatus struct {
	Partition   int       `json:"partition"`
	Owner       string    `json:"owner"`        // this process while it runs the partition, else ""
	Seq         uint64    `json:"seq"`          // last committed sequence
	Watermark   int64     `json:"watermark"`    // largest event time seen, unix ms
	LastArrival int64     `json:"last_arrival"` // arrival of the last record committed, unix ms
	Lag         uint64    `json:"lag"`          // records in the log not yet delivered
	Late        uint64    `json:"late"`         // too-late events skipped since start
	LastCommit  time.Time `json:"last_commit"`  // zero before the first commit of this process
	Rebuilds    int       `json:"rebuilds"`     // times the state was rebuilt from the log
}

// Layer is the speed layer.
type Layer struct {
	cfg     Config
	log     eventLog
	store   Store
	cutoffs CutoffSource
	shares  Shares
	cat     *config.Catalog
	logger  *slog.Logger
	m       *metrics
	owner   string

	mu     sync.Mutex
	status map[leases.Partition]*PartitionStatus
}

// New builds the speed layer over an event log (C, its consumer type, is
// inferred: *eventlog.Log gives *eventlog.Consumer) and a speed store.
// shares decides which partitions this process runs; nil runs every
// partition here (one process alone). Zero Config fields take the
// configuration's defaults (logic/defaults). logger may be nil (discarded)
// and reg may be nil (metrics unregistered); registering twice on one
// Registerer reuses the existing collectors.
func New[C Consumer](cfg Config, log EventLog[C], store Store, cutoffs CutoffSource, shares Shares, cat *config.Catalog, logger *slog.Logger, reg prometheus.Registerer) *Layer {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = defaults.SpeedBatchSize
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = defaults.SpeedMaxWait
	}
	if cfg.Epoch <= 0 {
		cfg.Epoch = defaults.Epoch
	}
	if cfg.MaxCells <= 0 {
		cfg.MaxCells = defaults.SpeedMaxCells
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if shares == nil {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		host, _ := os.Hostname()
		shares = alone{owner: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))}
	}
	return &Layer{cfg: cfg, log: logOf(log), store: store, cutoffs: cutoffs, shares: shares, cat: cat, logger: logger, m: newMetrics(reg),
		owner: shares.Owner(), status: map[leases.Partition]*PartitionStatus{}}
}

// alone is the Shares of a process that runs every partition itself.
type alone struct{ owner string }

func (a alone) Owner() string { return a.owner }

func (a alone) Run(ctx context.Context, parts []leases.Partition, work func(context.Context, leases.Partition) error) error {
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() { _ = work(ctx, p) })
	}
	wg.Wait()
	return nil
}

// Status returns a copy of every stream's status (for /v1/status): every
// partition of the streams with views, from the start of Run. Safe for
// concurrent use.
func (l *Layer) Status() map[string]StreamStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]StreamStatus{}
	for _, name := range l.cat.StreamOrder {
		var ps []PartitionStatus
		for p := range l.cat.Streams[name].Partitions {
			if st := l.status[leases.Partition{Stream: name, P: p}]; st != nil {
				ps = append(ps, *st)
			}
		}
		if ps != nil {
			out[name] = StreamStatus{Partitions: ps}
		}
	}
	return out
}

func (l *Layer) update(stream string, p int, f func(*PartitionStatus)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := leases.Partition{Stream: stream, P: p}
	st := l.status[k]
	if st == nil {
		st = &PartitionStatus{Partition: p}
		l.status[k] = st
	}
	f(st)
}

// Run consumes the partitions of every stream of the catalog that has
// live views (batch-tier views keep no speed state), those its Shares give
// this process, one goroutine per partition,
// until ctx ends; then each partition commits and acknowledges the
// micro-batch in hand and Run returns. A partition taken away (it moved to
// another process, its lease was lost) stops the same way. A partition
// loop that fails (a position conflict, a Redis that lost its data, a NATS
// or Redis outage) starts again from the store's position after a pause
// that grows with consecutive failures. Run returns only the Shares'
// error, never one of its own.
func (l *Layer) Run(ctx context.Context) error {
	var parts []leases.Partition
	for _, name := range l.cat.StreamOrder {
		if len(l.cat.SpeedViewsOf(name)) == 0 && len(l.entitiesOf(name)) == 0 {
			l.dropIdle(ctx, name)
			continue
		}
		l.m.leaseLost.WithLabelValues(name)
		for p := range l.cat.Streams[name].Partitions {
			parts = append(parts, leases.Partition{Stream: name, P: p})
			l.update(name, p, func(*PartitionStatus) {})
		}
	}
	return l.shares.Run(ctx, parts, func(pctx context.Context, p leases.Partition) error {
		l.runPartition(pctx, p.Stream, p.P)
		if ctx.Err() == nil {
			l.m.leaseLost.WithLabelValues(p.Stream).Inc()
		}
		return nil
	})
}

// runPartition runs partition p of a stream until ctx ends: its loop,
// started again from the store's position after a failure.
func (l *Layer) runPartition(ctx context.Context, name string, p int) {
	s, views := l.cat.Streams[name], l.cat.SpeedViewsOf(name)
	l.update(name, p, func(st *PartitionStatus) { st.Owner = l.owner })
	defer l.update(name, p, func(st *PartitionStatus) { st.Owner = "" })
	part := strconv.Itoa(p)
	pause := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := l.runStream(ctx, s, p, views)
		if err == nil || ctx.Err() != nil {
			break
		}
		switch {
		case errors.Is(err, errStateLost):
			l.m.conflicts.WithLabelValues(name, part).Inc()
			l.logger.Warn("speed state lost (Redis emptied?); rebuilding from the log", "stream", name, "partition", p, "err", err)
			pause = 200 * time.Millisecond
		case errors.Is(err, speedstore.ErrConflict):
			l.m.conflicts.WithLabelValues(name, part).Inc()
			l.logger.Warn("position moved under us; realigning", "stream", name, "partition", p, "err", err)
			pause = 200 * time.Millisecond
		default:
			l.logger.Error("speed stream failed; restarting", "stream", name, "partition", p, "err", err, "pause", pause)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

type metrics struct {
	events, late, decodeErrors, conflicts *prometheus.CounterVec
	leaseLost                             *prometheus.CounterVec
	lag                                   *prometheus.GaugeVec
	batchSize, commitSeconds              prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_events_total", Help: "Events folded into the speed store."}, []string{"stream", "partition"}),
		late:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_late_events_total", Help: "Too-late events skipped by the speed layer (the batch layer counts them)."}, []string{"stream", "partition"}),
		decodeErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_decode_errors_total", Help: "Log records the speed layer could not decode (a bug: they were validated at ingest)."}, []string{"stream"}),
		conflicts:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_conflicts_total", Help: "Commits refused because the position moved (redelivery, second writer, lost state)."}, []string{"stream", "partition"}),
		leaseLost:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_speed_lease_lost_total", Help: "Partitions of a stream this process stopped running while it went on (their lease was lost, or they moved to another speed process)."}, []string{"stream"}),
		lag:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "braid_speed_consumer_lag", Help: "Records in the log not yet delivered to the speed layer."}, []string{"stream", "partition"}),
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
	c, err := sharedmetrics.Register(reg, c)
	if err != nil {
		panic(fmt.Sprintf("speed: %v", err))
	}
	return c
}
