package batch

import (
	"context"
	"log/slog"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
)

// LogEnd is where a stream's log ended when a run was asked for.
type LogEnd struct {
	Seq     uint64 // sequence of the log's last record (0: the log is empty)
	Arrival int64  // when the log stored record Seq, unix ms (0: unknown)
}

// LogEnds tells an on-demand run where each stream's log ends, so that it
// can wait until the lake covers every record acknowledged before it was
// asked for. (*eventlog.Log).Info maps onto it (LastSeq, LastTime).
//
// LogEnd returns the stream's last record: every record the log
// acknowledged to a producer before the call has a sequence at or below
// Seq, and Arrival is the arrival time the log gave record Seq, the same
// one the archiver writes to the lake as _arrival (records of a stream
// arrive in sequence order). It must be safe for concurrent use and honour
// ctx; an error makes the run ask again while it waits.
type LogEnds interface {
	LogEnd(ctx context.Context, stream string) (LogEnd, error)
}

const (
	settlePoll     = 250 * time.Millisecond // how often a waiting run reads the lake's checkpoints
	settleProgress = 5 * time.Second        // how often it logs what it still waits for
	settleAsk      = 5 * time.Second        // longest wait of one question to the log
)

// covers reports whether a lake checkpoint lets a cutoff include every
// record up to end: the archiver has written them (cp.Seq), and the arrival
// epoch of the last one has closed within the coverage, so the latest
// cutoff the checkpoint allows (the epoch start at or below CoveredUntil)
// lies after end.Arrival.
//
// The cutoff is taken from CoveredUntil, never from end: records that
// arrive after the request in end's epoch are below that cutoff too, and
// CoveredUntil says they are in the lake as well, so every record stays on
// exactly one side of the batch/speed split.
func covers(cp lake.Checkpoint, end LogEnd, epoch time.Duration) bool {
	if end.Seq == 0 {
		return true
	}
	arrival := end.Arrival
	if arrival == 0 {
		// Unknown: record cp.Seq arrived at or after record end.Seq.
		arrival = cp.Arrival
	}
	return cp.Seq >= end.Seq && cp.CoveredUntil > 0 && logic.EpochOf(cp.CoveredUntil, epoch) > arrival
}

// noteEnds asks the log where each stream ends; a stream it could not ask
// about is missing from the answer (settle asks again).
func (r *Runner) noteEnds(ctx context.Context, streams []string) map[string]LogEnd {
	ends := make(map[string]LogEnd, len(streams))
	if r.cfg.Log == nil {
		return ends
	}
	for _, s := range streams {
		if end, err := r.askEnd(ctx, s); err == nil {
			ends[s] = end
		}
	}
	return ends
}

func (r *Runner) askEnd(ctx context.Context, stream string) (LogEnd, error) {
	actx, cancel := context.WithTimeout(ctx, settleAsk)
	defer cancel()
	return r.cfg.Log.LogEnd(actx, stream)
}

// settle waits, at most SettleTimeout, until the lake covers ends (the log
// positions noted for the request; streams missing there are asked for
// now) for every stream of the run, and reports whether it does. It polls
// the lake's checkpoints (written by the archiver, perhaps in another
// process) and logs its progress.
func (r *Runner) settle(ctx context.Context, log *slog.Logger, streams []string, ends map[string]LogEnd) bool {
	if r.cfg.Log == nil {
		log.Warn("no event log to ask where the streams end: the run takes the cutoffs the lake covers now")
		return false
	}
	start := time.Now()
	deadline := start.Add(r.cfg.SettleTimeout)
	lastLog := start
	first := true
	for {
		type behind struct {
			stream string
			end    LogEnd
			cp     lake.Checkpoint
			err    error
		}
		var wait []behind
		for _, s := range streams {
			end, ok := ends[s]
			if !ok {
				e, err := r.askEnd(ctx, s)
				if err != nil {
					wait = append(wait, behind{stream: s, err: err})
					continue
				}
				end, ends[s] = e, e
			}
			cp, err := r.lk.Checkpoint(s)
			if err != nil {
				wait = append(wait, behind{stream: s, end: end, err: err})
				continue
			}
			if !covers(cp, end, r.cfg.Epoch) {
				wait = append(wait, behind{stream: s, end: end, cp: cp})
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
				attrs := []any{"stream", b.stream, "waited_ms", now.Sub(start).Milliseconds()}
				if b.end.Seq > 0 {
					attrs = append(attrs, "log_seq", b.end.Seq, "epoch_end", logic.FormatTime(logic.EpochOf(b.end.Arrival, r.cfg.Epoch)+r.cfg.Epoch.Milliseconds()))
				}
				if b.err != nil {
					attrs = append(attrs, "err", b.err)
				} else {
					attrs = append(attrs, "archived_seq", b.cp.Seq)
					if b.cp.CoveredUntil > 0 {
						attrs = append(attrs, "covered_until", logic.FormatTime(b.cp.CoveredUntil))
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
