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

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
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
	log      eventLog
	store    Store
	cutoffs  CutoffSource
	cat      *config.Catalog
	logger   *slog.Logger
	m        *metrics
	owner    string
	leaseTTL time.Duration

	mu     sync.Mutex
	status map[string]*StreamStatus
}

// New builds the speed layer over an event log (C, its consumer type, is
// inferred: *eventlog.Log gives *eventlog.Consumer) and a speed store.
// Zero Config fields take the configuration's defaults (logic/defaults). logger may be nil
// (discarded) and reg may be nil (metrics unregistered); registering twice
// on one Registerer reuses the existing collectors.
func New[C Consumer](cfg Config, log EventLog[C], store Store, cutoffs CutoffSource, cat *config.Catalog, logger *slog.Logger, reg prometheus.Registerer) *Layer {
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
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	host, _ := os.Hostname()
	return &Layer{cfg: cfg, log: logOf(log), store: store, cutoffs: cutoffs, cat: cat, logger: logger, m: newMetrics(reg),
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
		for p := range l.cat.Streams[name].Partitions { // PARTITION-0: every process runs every partition (lease standby)
			wg.Add(1)
			go func() {
				defer wg.Done()
				pause := 200 * time.Millisecond
				for ctx.Err() == nil {
					err := l.runStream(ctx, l.cat.Streams[name], p, views)
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
	}
	wg.Wait()
	return nil
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
	c, err := sharedmetrics.Register(reg, c)
	if err != nil {
		panic(fmt.Sprintf("speed: %v", err))
	}
	return c
}
