package batch

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
)

// The real stores do the upkeep.
var (
	_ LakeUpkeep = (*lake.Lake)(nil)
	_ LogTrimmer = (*eventlog.Log)(nil)
)

// upkeeper keeps the lake and the log of the stream partitions the
// archiver runs up (so, with archivers sharing the partitions, each
// partition's by the archiver running it), in the background, one round
// every UpkeepEvery (the first at start), one partition after the other.
// In a round, per stream partition:
//
//   - the partition's log is trimmed (LogMaxAge > 0) of the records both
//     older than LogMaxAge and at or below the partition's committed lake
//     checkpoint: nothing leaves the log before it is in the lake, however
//     far behind the archiver is;
//   - the partition's lake files are compacted (unless NoCompact) when its
//     checkpoint moved since the last compaction and at least UpkeepEvery
//     has passed since the last one (or since start: a start does not
//     compact at once);
//   - with partition 0 (one archiver at a time runs it), for the whole
//     stream: the date partitions past the stream's retention are
//     dropped, at start and then every RetentionEvery: those dated before
//     logic.RetainedFrom; and what compaction and retention removed is
//     swept once its grace period is over.
//
// A failed task is logged and counted, and tried again at a later round
// (compaction and retention at the next one); it never stops archiving,
// nor the other tasks. The lake builds each commit on the newest manifest,
// so compaction and the writers' commits interleave safely.
type upkeeper struct {
	cfg ArchiverConfig
	cp  interface {
		PartCheckpoint(string, int) (lake.Checkpoint, error)
	}
	lake    LakeUpkeep // nil: no lake upkeep
	log     LogTrimmer // nil: no trimming
	streams map[string]*logic.Stream
	logger  *slog.Logger

	state map[Partition]*upkeepState // used by one goroutine

	compactions, compactedFiles, compactedBytes *prometheus.CounterVec
	dropped, swept, trimmed                     *prometheus.CounterVec
	errs                                        *prometheus.CounterVec
}

// upkeepState is one stream partition's upkeep schedule.
type upkeepState struct {
	compactedTo uint64    // the checkpoint Seq the last compaction covered
	compactAt   time.Time // when compaction last ran (or the partition's first round)
	retainedAt  time.Time // when retention last succeeded (zero: not yet; partition 0)
}

// newUpkeeper returns the upkeep of cat's stream partitions, nil when there
// is none to do (neither lake upkeep nor a log to trim).
func newUpkeeper(cfg ArchiverConfig, lk LakeWriter, lu LakeUpkeep, lt LogTrimmer, cat *config.Catalog, logger *slog.Logger, f promauto.Factory) *upkeeper {
	if lt == nil || cfg.LogMaxAge <= 0 {
		lt = nil
	}
	if lu == nil && lt == nil {
		return nil
	}
	u := &upkeeper{cfg: cfg, cp: lk, lake: lu, log: lt, logger: logger, streams: cat.Streams, state: map[Partition]*upkeepState{},
		compactions:    f.NewCounterVec(prometheus.CounterOpts{Name: "braid_lake_compactions_total", Help: "Compactions of a stream's lake that merged files."}, []string{"stream"}),
		compactedFiles: f.NewCounterVec(prometheus.CounterOpts{Name: "braid_lake_compacted_files_total", Help: "Lake files merged into larger ones by compaction."}, []string{"stream"}),
		compactedBytes: f.NewCounterVec(prometheus.CounterOpts{Name: "braid_lake_compacted_bytes_total", Help: "Bytes of the lake files compaction wrote."}, []string{"stream"}),
		dropped:        f.NewCounterVec(prometheus.CounterOpts{Name: "braid_lake_retention_dropped_files_total", Help: "Lake files removed by the stream's retention."}, []string{"stream"}),
		swept:          f.NewCounterVec(prometheus.CounterOpts{Name: "braid_lake_swept_files_total", Help: "Removed lake files deleted once their grace period was over."}, []string{"stream"}),
		trimmed:        f.NewCounterVec(prometheus.CounterOpts{Name: "braid_log_trimmed_records_total", Help: "Log records removed by nats.max_age once archived."}, []string{"stream"}),
		errs:           f.NewCounterVec(prometheus.CounterOpts{Name: "braid_archive_upkeep_errors_total", Help: "Failed upkeep tasks (tried again later): trim, compact, retention, sweep, checkpoint."}, []string{"stream", "task"}),
	}
	return u
}

// run does a round at start, then every UpkeepEvery, until ctx ends, over
// the partitions parts lists at the time.
func (u *upkeeper) run(ctx context.Context, parts func() []Partition) {
	t := time.NewTicker(u.cfg.UpkeepEvery)
	defer t.Stop()
	for {
		u.round(ctx, u.cfg.Now(), parts())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round does what is due at now for every partition of parts.
func (u *upkeeper) round(ctx context.Context, now time.Time, parts []Partition) {
	for _, p := range parts {
		if ctx.Err() != nil {
			return
		}
		u.partition(ctx, u.streams[p.Stream], p.P, now)
	}
}

func (u *upkeeper) fail(stream, task string, err error, args ...any) {
	u.errs.WithLabelValues(stream, task).Inc()
	u.logger.Warn("lake upkeep failed; trying again later", append([]any{"stream", stream, "task", task, "err", err}, args...)...)
}

// partition does what is due at now for partition p of stream s.
func (u *upkeeper) partition(ctx context.Context, s *logic.Stream, p int, now time.Time) {
	st := u.state[Partition{s.Name, p}]
	if st == nil {
		st = &upkeepState{compactAt: now}
		u.state[Partition{s.Name, p}] = st
	}
	cp, err := u.cp.PartCheckpoint(s.Name, p)
	if err != nil {
		u.fail(s.Name, "checkpoint", err, "partition", p)
		return
	}
	if u.log != nil && cp.Seq > 0 {
		before := now.Add(-u.cfg.LogMaxAge)
		n, err := u.log.Trim(ctx, s.Name, p, before, cp.Seq)
		switch {
		case err != nil:
			u.fail(s.Name, "trim", err, "partition", p, "up_to", cp.Seq)
		case n > 0:
			u.trimmed.WithLabelValues(s.Name).Add(float64(n))
			u.logger.Debug("trimmed the log", "stream", s.Name, "partition", p, "records", n, "before", before, "up_to", cp.Seq)
		}
	}
	if u.lake == nil {
		return
	}
	if !u.cfg.NoCompact && cp.Seq > st.compactedTo && now.Sub(st.compactAt) >= u.cfg.UpkeepEvery {
		st.compactAt = now
		stats, err := u.lake.Compact(ctx, s, p, u.cfg.TargetFileBytes)
		switch {
		case err != nil:
			u.fail(s.Name, "compact", err, "partition", p)
		default:
			st.compactedTo = cp.Seq
			if stats.FilesIn > 0 {
				u.compactions.WithLabelValues(s.Name).Inc()
				u.compactedFiles.WithLabelValues(s.Name).Add(float64(stats.FilesIn))
				u.compactedBytes.WithLabelValues(s.Name).Add(float64(stats.Bytes))
				u.logger.Info("compacted the lake", "stream", s.Name, "partition", p, "dates", stats.Partitions, "files_in", stats.FilesIn, "files_out", stats.FilesOut, "bytes", stats.Bytes)
			}
		}
	}
	if p != 0 {
		return // the stream's retention and sweeps go with partition 0
	}
	if r := u.cfg.Retention[s.Name]; r > 0 && (st.retainedAt.IsZero() || now.Sub(st.retainedAt) >= u.cfg.RetentionEvery) {
		from := logic.RetainedFrom(r, now)
		n, err := u.lake.DropBefore(ctx, s.Name, from)
		switch {
		case err != nil:
			u.fail(s.Name, "retention", err, "before", from)
		default:
			st.retainedAt = now
			if n > 0 {
				u.dropped.WithLabelValues(s.Name).Add(float64(n))
				u.logger.Info("dropped lake date partitions past retention", "stream", s.Name, "before", from, "files", n)
			}
		}
	}
	// Removed files wait out their grace period: the sweep looks every
	// round (a restart sweeps what an earlier process left).
	n, err := u.lake.Sweep(ctx, s.Name)
	switch {
	case err != nil:
		u.fail(s.Name, "sweep", err)
	case n > 0:
		u.swept.WithLabelValues(s.Name).Add(float64(n))
	}
}
