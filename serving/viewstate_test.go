package serving

import (
	"testing"
	"time"

	"github.com/braid-data/braid/storage/batchviews"
)

// A position the speed layer created fresh (Redis lost its data, a first
// start over a log, a replay) has every view joined at once, but its cells
// miss the events up to its target: the views are rebuilding until the
// position reaches it, then ready.
func TestFreshPositionIsWholeAtItsTarget(t *testing.T) {
	v := fuzzView(t, fuzzStream(t), "by_country", time.Minute, 0)
	ver := &batchviews.Version{Views: map[string]batchviews.ViewVersion{v.Name: {Cutoff: 5000, Definition: v.Definition()}}}
	pos := func(seq, target uint64) StreamSpeed {
		return StreamSpeed{Found: true, Seq: seq, Target: target,
			Views: map[string]ViewSpeed{v.StateKey(): {JoinedOK: true, Joined: seq, From: 5000}}}
	}
	for _, tc := range []struct {
		seq, target uint64
		ready       bool
	}{
		{0, 0, true}, // a fresh position over nothing to refold
		{0, 8, false},
		{3, 8, false},
		{8, 8, true},
		{12, 8, true},
	} {
		st := viewState(v, ver, pos(tc.seq, tc.target), true, true)
		if st.Ready != tc.ready || (st.Ready && st.Progress != 1) || (!st.Ready && (st.Progress < 0 || st.Progress >= 1)) {
			t.Errorf("seq %d, target %d: ready %v, progress %v; want ready %v", tc.seq, tc.target, st.Ready, st.Progress, tc.ready)
		}
	}
}
