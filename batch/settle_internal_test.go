package batch

import (
	"testing"
	"time"

	"github.com/braid-data/braid/storage/lake"
)

// TestCovers: a checkpoint covers a request's log end when the archiver has
// written it and the lake's coverage passes the end of its arrival epoch,
// so the cutoff the checkpoint allows (an epoch start) lies after it.
func TestCovers(t *testing.T) {
	const e = 10_000 // ms
	epoch := time.Duration(e) * time.Millisecond
	end := LogEnd{Seq: 50, Arrival: 3*e + 4_321} // arrived in the epoch [3e, 4e)
	cases := []struct {
		name string
		cp   lake.Checkpoint
		end  LogEnd
		want bool
	}{
		{"an empty log", lake.Checkpoint{}, LogEnd{}, true},
		{"not yet archived", lake.Checkpoint{Seq: 49, Arrival: 3*e + 4_000, CoveredUntil: 3*e + 4_000}, end, false},
		{"archived, its epoch still open", lake.Checkpoint{Seq: 50, Arrival: end.Arrival, CoveredUntil: end.Arrival}, end, false},
		// Records after the request in the same epoch: covered only once
		// the coverage reaches the epoch's end, and then they are in too.
		{"later records of the same epoch", lake.Checkpoint{Seq: 60, Arrival: 4*e - 1, CoveredUntil: 4*e - 1}, end, false},
		{"the epoch closed by a later record", lake.Checkpoint{Seq: 61, Arrival: 4 * e, CoveredUntil: 4 * e}, end, true},
		{"the epoch closed by the clock, log idle", lake.Checkpoint{Seq: 50, Arrival: end.Arrival, CoveredUntil: 4*e + 700}, end, true},
		{"coverage without the record", lake.Checkpoint{Seq: 49, Arrival: 3 * e, CoveredUntil: 5 * e}, end, false},
		{"arrival unknown: the checkpoint's record stands in", lake.Checkpoint{Seq: 50, Arrival: end.Arrival, CoveredUntil: 4*e - 1}, LogEnd{Seq: 50}, false},
		{"arrival unknown, epoch closed", lake.Checkpoint{Seq: 50, Arrival: end.Arrival, CoveredUntil: 4 * e}, LogEnd{Seq: 50}, true},
	}
	for _, c := range cases {
		if got := covers([]lake.Checkpoint{c.cp}, []LogEnd{c.end}, epoch); got != c.want {
			t.Errorf("%s: covers(%+v, %+v) = %v, want %v", c.name, c.cp, c.end, got, c.want)
		}
	}
}

// TestCoversPartitions: a stream of several partitions is covered when
// every partition has written its records up to its end and the stream's
// coverage, the least of its partitions', passes the end of every end's
// arrival epoch (an empty partition needs no record, but its coverage
// still counts).
func TestCoversPartitions(t *testing.T) {
	const e = 10_000 // ms
	epoch := time.Duration(e) * time.Millisecond
	ends := []LogEnd{{Seq: 50, Arrival: 3*e + 4_321}, {Seq: 7, Arrival: 2*e + 10}, {}}
	done := func(seq uint64, cu int64) lake.Checkpoint {
		return lake.Checkpoint{Seq: seq, Arrival: 3 * e, CoveredUntil: cu}
	}
	cases := []struct {
		name string
		cps  []lake.Checkpoint
		want bool
	}{
		{"every partition written and covered", []lake.Checkpoint{done(50, 4*e), done(7, 4*e), done(0, 4*e)}, true},
		{"a partition not written", []lake.Checkpoint{done(50, 4*e), done(6, 5*e), done(0, 4*e)}, false},
		{"the last end's epoch open in one partition's coverage", []lake.Checkpoint{done(50, 5*e), done(7, 4*e-1), done(0, 5*e)}, false},
		{"an empty partition never covered", []lake.Checkpoint{done(50, 4*e), done(7, 4*e), done(0, 0)}, false},
		{"an empty partition covered short of another's end", []lake.Checkpoint{done(50, 4*e), done(7, 4*e), done(0, 3*e+5_000)}, false},
	}
	for _, c := range cases {
		if got := covers(c.cps, ends, epoch); got != c.want {
			t.Errorf("%s: covers(%+v) = %v, want %v", c.name, c.cps, got, c.want)
		}
	}
	if !covers(make([]lake.Checkpoint, 3), make([]LogEnd, 3), epoch) {
		t.Error("empty logs: not covered")
	}
}
