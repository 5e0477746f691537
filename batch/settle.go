package batch

import (
	"context"
	"log/slog"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
)

// LogEnd is where a stream partition's log ended when a run was asked for.
type LogEnd struct {
	Seq     uint64 // sequence of the log's last record (0: the log is empty)
	Arrival int64  // when the log stored record Seq, unix ms (0: unknown)
}

// LogEnds tells an on-demand run where each stream partition's log ends,
// so that it can wait until the lake covers every record acknowledged
// before it was asked for. (*eventlog.Log).Info maps onto it (LastSeq,
// LastTime).
//
// LogEnd returns the last record of partition p of the stream: every
// record the log acknowledged to a producer before the call has a sequence
// at or below Seq in its partition, and Arrival is the arrival time the
// log gave record Seq, the same one the archiver writes to the lake as
// _arrival (records of a partition arrive in sequence order). It must be
// safe for concurrent use and honour ctx; an error makes the run ask again
// while it waits.
type LogEnds interface {
	LogEnd(ctx context.Context, stream string, p int) (LogEnd, error)
}

const (
	settlePoll     = 250 * time.Millisecond // how often a waiting run reads the lake's checkpoints
	settleProgress = 5 * time.Second        // how often it logs what it still waits for
	settleAsk      = 5 * time.Second        // longest wait of one question to the log
)

// covers reports whether the lake checkpoints of a stream's partitions
// (cps[p]) let a cutoff include every record up to ends (ends[p], one per
// partition): the archivers have written them (cps[p].Seq), and the
// arrival epoch of every partition's last one has closed within the
// stream's coverage, the least CoveredUntil of its partitions (a
// partition's archiver marks an idle partition covered too), so the
// latest cutoff the checkpoints allow (the epoch start at or below that
// coverage) lies after every end's arrival.
//
// The cutoff is taken from the coverage, never from ends: records that
// arrive after the request in an end's epoch are below that cutoff too,
// and the coverage says they are in the lake as well, so every record
// stays on exactly one side of the batch/speed split.
func covers(cps []lake.Checkpoint, ends []LogEnd, epoch time.Duration) bool {
	cu := cps[0].CoveredUntil
	for _, cp := range cps[1:] {
		cu = min(cu, cp.CoveredUntil)
	}
	for p, end := range ends {
		if end.Seq == 0 {
			continue
		}
		arrival := end.Arrival
		if arrival == 0 {
			// Unknown: record cp.Seq arrived at or after record end.Seq.
			arrival = cps[p].Arrival
		}
		if cps[p].Seq < end.Seq || cu <= 0 || logic.EpochOf(cu, epoch) <= arrival {
			return false
		}
	}
	return true
}

// noteEnds asks the log where each partition of streams ends; a partition
// it could not ask about is missing from the answer (settle asks again).
func (r *Runner) noteEnds(ctx context.Context, streams []string) map[Partition]LogEnd {
	ends := map[Partition]LogEnd{}
	if r.cfg.Log == nil {
		return ends
	}
	for _, s := range streams {
		for p := range r.partitions(s) {
			if end, err := r.askEnd(ctx, Partition{s, p}); err == nil {
				ends[Partition{s, p}] = end
			}
		}
	}
	return ends
}

// partitions is the number of partitions of a stream's log.
func (r *Runner) partitions(stream string) int {
	if s, ok := r.cat.Streams[stream]; ok {
		return max(1, s.Partitions)
	}
	return 1
}

func (r *Runner) askEnd(ctx context.Context, p Partition) (LogEnd, error) {
	actx, cancel := context.WithTimeout(ctx, settleAsk)
	defer cancel()
	return r.cfg.Log.LogEnd(actx, p.Stream, p.P)
}

// settle waits, at most SettleTimeout, until the lake covers ends (the log
// positions noted for the request; partitions missing there are asked for
// now) for every stream of the run, and reports whether it does. It polls
// the lake's checkpoints (written by the archivers, perhaps in other
// processes) and logs its progress.
func (r *Runner) settle(ctx context.Context, log *slog.Logger, streams []string, ends map[Partition]LogEnd) bool {
	if r.cfg.Log == nil {
		log.Warn("no event log to ask where the streams end: the run takes the cutoffs the lake covers now")
		return false
	}
	start := time.Now()
	deadline := start.Add(r.cfg.SettleTimeout)
	lastLog := start
	first := true
	for {
		// behind is a stream the lake does not cover yet: the first of its
		// partitions that holds it back, with that partition's end and
		// checkpoint, and the stream's coverage.
		type behind struct {
			stream  string
			p       int
			end     LogEnd
			cp      lake.Checkpoint
			covered int64
			err     error
		}
		var wait []behind
		for _, s := range streams {
			n := r.partitions(s)
			cps, es := make([]lake.Checkpoint, n), make([]LogEnd, n)
			var b *behind
			for p := range n {
				end, ok := ends[Partition{s, p}]
				if !ok {
					e, err := r.askEnd(ctx, Partition{s, p})
					if err != nil {
						b = &behind{stream: s, p: p, err: err}
						break
					}
					end, ends[Partition{s, p}] = e, e
				}
				cp, err := r.lk.PartCheckpoint(s, p)
				if err != nil {
					b = &behind{stream: s, p: p, end: end, err: err}
					break
				}
				cps[p], es[p] = cp, end
			}
			if b == nil && !covers(cps, es, r.cfg.Epoch) {
				b = &behind{stream: s, covered: cps[0].CoveredUntil}
				for p := range n {
					b.covered = min(b.covered, cps[p].CoveredUntil)
				}
				for p := range n {
					if !covers(cps[p:p+1], es[p:p+1], r.cfg.Epoch) || cps[p].CoveredUntil == b.covered {
						b.p, b.end, b.cp = p, es[p], cps[p]
						break
					}
				}
			}
			if b != nil {
				wait = append(wait, *b)
			}
		}
		now := time.Now()
		if len(wait) == 0 {
			log.Info("the lake covers the request", "waited_ms", now.Sub(start).Milliseconds())
			return true
		}
		expired := !now.Before(deadline)
		if first || expired || now.Sub(lastLog) >= settleProgress {
			lastLog = now
			for _, b := range wait {
				attrs := []any{"stream", b.stream, "partition", b.p, "waited_ms", now.Sub(start).Milliseconds()}
				if b.end.Seq > 0 {
					attrs = append(attrs, "log_seq", b.end.Seq, "epoch_end", logic.FormatTime(logic.EpochOf(b.end.Arrival, r.cfg.Epoch)+r.cfg.Epoch.Milliseconds()))
				}
				if b.err != nil {
					attrs = append(attrs, "err", b.err)
				} else {
					attrs = append(attrs, "archived_seq", b.cp.Seq)
					if b.covered > 0 {
						attrs = append(attrs, "covered_until", logic.FormatTime(b.covered))
					}
				}
				switch {
				case expired:
					log.Warn("settle timeout: the run takes the cutoff the lake covers, short of the request", append(attrs, "settle_timeout", r.cfg.SettleTimeout.String())...)
				case first:
					log.Info("waiting for the lake to cover the request", attrs...)
				default:
					log.Info("still waiting for the lake to cover the request", attrs...)
				}
			}
		}
		if expired {
			return false
		}
		first = false
		t := time.NewTimer(min(settlePoll, deadline.Sub(now)))
		select {
		case <-ctx.Done():
			t.Stop()
			log.Warn("stopped waiting for the lake to cover the request", "err", ctx.Err())
			return false
		case <-t.C:
		}
	}
}
