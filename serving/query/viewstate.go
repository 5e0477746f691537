package query

import (
	"fmt"
	"math"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
)

// ViewState is whether a view can answer now. A view answers only from
// state written under its definition (logic.View.Definition): batch rows
// of that definition (Batch), and speed cells that have joined the
// commits of every partition of their stream (of positions that have
// reached their targets, when created fresh) and start at or before the
// batch rows' cutoff (or at the log's start when there are none). Until both hold the view is
// rebuilding: it answers a *RebuildingError (serving: 503), never partial
// data.
type ViewState struct {
	Ready    bool
	Progress float64                 // 0..1: how far the rebuild is (1 when ready)
	Batch    *batchviews.ViewVersion // the batch rows to answer from; nil: none
}

// StateOf decides a view's state from the current batch version (nil:
// none), the stream's speed position, and which layers the engine reads
// (speed: cells and positions; batch: versions). A batch-tier view reads
// no speed cells whatever the engine has: it is ready once the batch
// version holds its definition (or there is no version yet). A pure
// function.
func StateOf(v *logic.View, ver *batchviews.Version, pos StreamSpeed, speed, batch bool) ViewState {
	speed = speed && v.Tier == logic.TierLive
	var st ViewState
	batchMatch := false
	if ver != nil {
		if vv, ok := ver.Views[v.Name]; ok && vv.Definition == v.Definition() {
			st.Batch, batchMatch = &vv, true
		}
	}
	if !speed {
		// Batch only: the rows of today's definition, or no version yet.
		st.Ready = !batch || ver == nil || batchMatch
		if st.Ready {
			st.Progress = 1
		}
		return st
	}
	// Each partition's cells must have joined its commits (and reached its
	// target, for a fresh position); the view's cells start where the
	// latest partition's do.
	key := v.StateKey()
	speedDone := pos.Found
	var from int64
	speedPart := 0.0
	for _, p := range pos.Parts {
		vp := p.Views[key]
		from = max(from, vp.From)
		done, part := partState(p, vp)
		speedDone = speedDone && done
		speedPart += part
	}
	if n := len(pos.Parts); n > 0 {
		speedPart /= float64(n)
	}
	// The speed cells start at from: batch rows must reach that far, or,
	// without batch rows of this definition, the cells must cover the
	// whole log.
	batchDone := (batchMatch && st.Batch.Cutoff >= from) || (!batchMatch && from == 0)
	if !batchMatch {
		st.Batch = nil
	}
	if speedDone && batchDone {
		return ViewState{Ready: true, Progress: 1, Batch: st.Batch}
	}
	batchPart := 0.0
	if batchDone {
		batchPart = 1
	}
	st.Progress = math.Min(0.99, math.Round((speedPart+batchPart)/2*100)/100)
	return st
}

// partState says whether a view's cells of one partition are whole (they
// joined its commits, and its position reached its target), and how far
// they are, 0..1: the records refolded toward the target, or folded by a
// rebuild since it began.
func partState(p PartSpeed, vp ViewSpeed) (done bool, progress float64) {
	joined := p.Found && vp.JoinedOK && vp.Joined == p.Seq
	switch {
	case joined && p.Seq >= p.Target:
		return true, 1
	case joined:
		return false, float64(p.Seq) / float64(p.Target)
	case vp.Rebuilding && p.Seq > vp.RebuildFirst:
		first := vp.RebuildFirst
		if first > 0 {
			first-- // progress counts records folded
		}
		return false, float64(vp.Rebuilt-min(vp.Rebuilt, first)) / float64(p.Seq-first)
	}
	return false, 0
}

// RebuildingError is the error of a query of a view that is rebuilding,
// with its progress (serving answers it 503 with Retry-After).
type RebuildingError struct {
	View     string
	Progress float64
}

func (e *RebuildingError) Error() string {
	return fmt.Sprintf("view %s is rebuilding (%.0f%%)", e.View, 100*e.Progress)
}

// Watermark is the watermark of view v's answers (unix ms, 0: unknown),
// which marks the windows that ended at or before it final. A live view's
// is its stream's (the largest event time the speed layer saw, pos,
// minus the allowed lateness). A batch-tier view's is its batch cutoff
// (st.Batch) minus the allowed lateness: its rows change only with the
// next batch run, and a window that ended that long before the cutoff is
// as final as the speed layer would call it; no cutoff, no watermark.
func Watermark(v *logic.View, st ViewState, pos StreamSpeed) int64 {
	if v.Tier != logic.TierLive {
		if st.Batch == nil || st.Batch.Cutoff <= 0 {
			return 0
		}
		return logic.Watermark{Max: st.Batch.Cutoff}.At(v.Stream.AllowedLateness)
	}
	return logic.Watermark{Max: pos.Watermark}.At(v.Stream.AllowedLateness)
}

// Freshness is how old, at now (unix ms), the newest data behind view v's
// answers may be, in ms (ok false: unknown). It is never negative.
//
// A batch-tier view answers what arrived before its batch cutoff
// (st.Batch): now minus the cutoff. A live view answers what the speed
// layer folded: per partition of its stream, 0 when the position has
// reached the partition's last log record (ends[p]; ends nil: unknown),
// else now minus the arrival of the last record folded (an upper bound:
// the records after it arrived later); the stalest partition decides.
// Without a position in every partition (the speed layer has not started
// one, or this process reads none), or one whose last arrival is unknown
// while it lags, a live view falls back on its batch cutoff. A pure
// function.
func Freshness(v *logic.View, st ViewState, pos StreamSpeed, ends []uint64, now int64) (ms int64, ok bool) {
	cutoff := func() (int64, bool) {
		if st.Batch == nil || st.Batch.Cutoff <= 0 {
			return 0, false
		}
		return max(0, now-st.Batch.Cutoff), true
	}
	if v.Tier != logic.TierLive || !pos.Found || len(pos.Parts) == 0 {
		return cutoff()
	}
	var worst int64
	for i, p := range pos.Parts {
		if ends != nil && i < len(ends) && p.Seq >= ends[i] {
			continue // caught up: the answer holds every record of the partition
		}
		if p.LastArrival <= 0 {
			return cutoff()
		}
		worst = max(worst, now-p.LastArrival)
	}
	return worst, true
}
