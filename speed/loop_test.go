package speed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// Unit tests of the stream loop's steps over in-memory fakes of the speed
// layer's interfaces (fakes_test.go).

// openAt opens a loop over a stored position at seq.
func (u *unit) openAt(t *testing.T, seq uint64) *streamLoop {
	t.Helper()
	u.store.setPos(u.joinedAt(seq, 0))
	u.log.info = eventlog.StreamInfo{FirstSeq: 1, LastSeq: seq + 1000, Msgs: seq + 1000}
	lp := u.loop()
	t.Cleanup(func() { lp.close() })
	if err := lp.open(context.Background()); err != nil {
		t.Fatalf("open: %v", err)
	}
	return lp
}

func seqs(msgs []eventlog.Msg) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// accept and take yield exactly the contiguous prefix of what was
// delivered after the committed position, whatever the order, the
// repeats and the gaps of the deliveries; records ahead of a gap stay
// held, and records the store holds are reported as skipped.
func TestAcceptTakesTheContiguousPrefixAcrossGaps(t *testing.T) {
	u := newUnit(t, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 50 {
		const committed, last = 10, 60
		lp := u.loop()
		lp.committed, lp.expect = committed, committed+1
		all := u.records(t, 1, last)
		delivered := map[uint64]bool{}
		var taken []uint64
		for len(taken) < last-committed {
			// A delivery: a few records anywhere in the log, some again.
			var batch []eventlog.Msg
			for range 1 + rng.IntN(8) {
				batch = append(batch, all[rng.IntN(last)])
			}
			var wantSkipped uint64
			for _, m := range batch {
				delivered[m.Seq] = true
				if m.Seq <= committed {
					wantSkipped = max(wantSkipped, m.Seq)
				}
			}
			if got := lp.accept(batch); got.Seq != wantSkipped {
				t.Fatalf("round %d: skipped %d, want %d (delivered %v)", round, got.Seq, wantSkipped, seqs(batch))
			}
			for m, ok := lp.take(); ok; m, ok = lp.take() {
				taken = append(taken, m.Seq)
			}
			// Independently: the longest run committed+1, committed+2, ...
			// among the records delivered so far.
			var want []uint64
			for s := uint64(committed + 1); delivered[s]; s++ {
				want = append(want, s)
			}
			if !slices.Equal(taken, want) {
				t.Fatalf("round %d: taken %v, want %v", round, taken, want)
			}
			for s := range lp.held {
				if s <= committed || slices.Contains(taken, s) || !delivered[s] {
					t.Fatalf("round %d: held %d (taken %v)", round, s, taken)
				}
			}
			for s := range delivered {
				if s > committed && !slices.Contains(taken, s) && lp.held[s].Seq != s {
					t.Fatalf("round %d: delivered %d neither taken nor held", round, s)
				}
			}
		}
		if len(lp.held) != 0 || lp.expect != last+1 {
			t.Fatalf("round %d: held %d, expect %d at the end", round, len(lp.held), lp.expect)
		}
	}
}

// Without a known first record (a consumer started by time whose ack floor
// is unknown) the first one delivered starts the prefix.
func TestAcceptStartsAtTheFirstDeliveredWhenUnknown(t *testing.T) {
	u := newUnit(t, nil)
	lp := u.loop()
	all := u.records(t, 1, 9)
	lp.accept([]eventlog.Msg{all[6], all[4], all[5], all[8]})
	var taken []uint64
	for m, ok := lp.take(); ok; m, ok = lp.take() {
		taken = append(taken, m.Seq)
	}
	if !slices.Equal(taken, []uint64{5, 6, 7}) || len(lp.held) != 1 || lp.held[9].Seq != 9 {
		t.Fatalf("taken %v, held %v: want 5 6 7 taken and 9 held", taken, lp.held)
	}
}

// fold folds every event into every view's delta except the too-late ones
// (behind the watermark of the events before them by more than the
// allowed lateness), which are set aside with their place and bytes; the
// commit publishes them to the late subject before it commits, and
// settle counts them.
func TestFoldSetsTooLateEventsAsideAndCommitPublishesThem(t *testing.T) {
	u := newUnit(t, nil)
	lp := u.openAt(t, 0)
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Now().UnixMilli()
	arrival := now + time.Hour.Milliseconds() // no event is ahead of its arrival: the watermark lead plays no part
	lateness := u.s.AllowedLateness.Milliseconds()
	var (
		wm       int64 // the largest event time folded so far (independent of logic.Watermark)
		folded   int
		wantLate []eventlog.EventRef
		lateRecs [][]byte
	)
	for seq := uint64(1); seq <= 4; seq++ {
		ts := make([]int64, 25)
		for i := range ts {
			ts[i] = now - rng.Int64N(3*time.Hour.Milliseconds())
		}
		m, recs := u.record(t, seq, arrival, ts...)
		for i, x := range ts {
			if wm != 0 && x < wm-lateness {
				wantLate = append(wantLate, eventlog.EventRef{Seq: seq, Index: i})
				lateRecs = append(lateRecs, recs[i])
				continue
			}
			wm = max(wm, x)
			folded++
		}
		lp.accept([]eventlog.Msg{m})
		if err := lp.foldAccepted(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(wantLate) == 0 || folded == 0 {
		t.Fatalf("a test of nothing: %d late, %d folded", len(wantLate), folded)
	}
	b := lp.b
	if b.n != 4 || b.last.Seq != 4 || b.folded != folded || !slices.Equal(b.late, wantLate) || lp.wm.Max != wm {
		t.Fatalf("batch: n %d, last %d, folded %d, late %v, watermark %d; want 4, 4, %d, %v, %d",
			b.n, b.last.Seq, b.folded, b.late, lp.wm.Max, folded, wantLate, wm)
	}
	for i := range lateRecs {
		if !bytes.Equal(b.lateData[i], lateRecs[i]) {
			t.Fatalf("late event %d: bytes %q, want %q", i, b.lateData[i], lateRecs[i])
		}
	}

	if err := lp.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := lp.settle(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u.log.late, wantLate) {
		t.Fatalf("published late %v, want %v", u.log.late, wantLate)
	}
	for i := range lateRecs {
		if !bytes.Equal(u.log.data[i], lateRecs[i]) {
			t.Fatalf("published late event %d: %q, want %q", i, u.log.data[i], lateRecs[i])
		}
	}
	cs := u.store.commits()
	last := cs[len(cs)-1]
	for i, n := range last.counts {
		if n != float64(folded) {
			t.Fatalf("view %s counted %v events, want %d", u.views[i].Name, n, folded)
		}
	}
	if last.prev != 0 || last.next.Seq != 4 || last.next.Watermark != wm {
		t.Fatalf("commit %d → %+v, want 0 → 4 at watermark %d", last.prev, last.next, wm)
	}
	if ops := u.j.list(); !slices.Equal(ops, []string{fmt.Sprintf("late %d", len(wantLate)), "commit 4", "ack 4"}) {
		t.Fatalf("calls %v: want the late events published before the commit, the ack after", ops)
	}
	if st := u.layer.Status()["orders"].Partitions[0]; st.Late != uint64(len(wantLate)) || st.Seq != 4 || st.Watermark != wm {
		t.Fatalf("status %+v, want %d late at 4, watermark %d", st, len(wantLate), wm)
	}
}

// A record is acknowledged only once the commit that holds it succeeded;
// while a commit runs, the next batch takes what is fetched (group commit)
// and commits from the position the previous one wrote.
func TestSettleAcksOnlyAfterCommitAndGroupsWhileBusy(t *testing.T) {
	u := newUnit(t, nil)
	lp := u.openAt(t, 4)
	u.store.gate = make(chan struct{})
	ctx := context.Background()
	all := u.records(t, 1, 12)
	step := func(msgs ...eventlog.Msg) {
		t.Helper()
		skipped := lp.accept(msgs)
		if err := lp.foldAccepted(ctx); err != nil {
			t.Fatal(err)
		}
		if err := lp.commitStep(ctx, len(msgs), skipped); err != nil {
			t.Fatal(err)
		}
	}
	step(all[4:7]...) // 5..7: committed in the background
	if !lp.busy() || lp.b.n != 0 {
		t.Fatalf("busy %v with %d records in hand: want the batch committing", lp.busy(), lp.b.n)
	}
	step(all[7:9]...)  // 8, 9: taken while 5..7 commit
	step(all[9:10]...) // 10
	if lp.b.n != 3 || lp.inflight == nil || len(u.c.acked()) != 0 || len(u.store.commits()) != 0 {
		t.Fatalf("%d in hand, acks %v, commits %d: want 3 records grouped, nothing acknowledged before the commit",
			lp.b.n, u.c.acked(), len(u.store.commits()))
	}
	u.store.gate <- struct{}{}
	if err := lp.settle(); err != nil {
		t.Fatal(err)
	}
	if lp.committed != 7 || !slices.Equal(u.c.acked(), []uint64{7}) || u.layer.Status()["orders"].Partitions[0].Seq != 7 {
		t.Fatalf("committed %d, acks %v, status %+v: want 7", lp.committed, u.c.acked(), u.layer.Status()["orders"].Partitions[0])
	}
	step() // nothing fetched: the group is committed
	u.store.gate <- struct{}{}
	if err := lp.settle(); err != nil {
		t.Fatal(err)
	}
	cs := u.store.commits()
	if len(cs) != 2 || cs[0].prev != 4 || cs[0].next.Seq != 7 || cs[1].prev != 7 || cs[1].next.Seq != 10 {
		t.Fatalf("commits %+v: want 4 → 7 → 10", cs)
	}
	if cs[0].counts[1] != 3 || cs[1].counts[1] != 3 {
		t.Fatalf("events per commit %v, %v: want 3 and 3", cs[0].counts, cs[1].counts)
	}
	if ops := u.j.list(); !slices.Equal(ops, []string{"commit 7", "ack 7", "commit 10", "ack 10"}) {
		t.Fatalf("calls %v: want each ack after its commit", ops)
	}
	// Records the store holds, delivered again, are acknowledged (once the
	// store confirms it) and not folded.
	step(all[2], all[5])
	if lp.b.n != 0 || !slices.Equal(u.c.acked(), []uint64{7, 10, 6}) {
		t.Fatalf("%d in hand, acks %v: want the redelivered 6 acknowledged, nothing folded", lp.b.n, u.c.acked())
	}
}

// A commit refused because another writer moved the position fails the
// loop with ErrConflict, with nothing acknowledged; with the position gone
// (Redis lost its data) it is errStateLost.
func TestCommitConflictFailsTheLoop(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(fmt.Sprint("lost=", lost), func(t *testing.T) {
			u := newUnit(t, nil)
			lp := u.openAt(t, 4)
			if lost {
				u.store.setPos(nil)
			} else {
				u.store.setPos(u.joinedAt(6, 0)) // another writer
			}
			lp.accept(u.records(t, 5, 6))
			if err := lp.foldAccepted(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := lp.flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			err := lp.settle()
			if !errors.Is(err, speedstore.ErrConflict) || errors.Is(err, errStateLost) != lost {
				t.Fatalf("settle: %v; want ErrConflict, state lost %v", err, lost)
			}
			if lp.committed != 4 || len(u.c.acked()) != 0 || len(u.store.commits()) != 0 {
				t.Fatalf("committed %d, acks %v, commits %d: want nothing moved", lp.committed, u.c.acked(), len(u.store.commits()))
			}
		})
	}
}

// After a conflict the layer starts the loop again from the store's
// position: the consumer is reopened after it and the commits go on from
// it; the refused batch is folded by nobody twice.
func TestRunRestartsFromTheStoreAfterAConflict(t *testing.T) {
	u := newUnit(t, nil)
	u.store.setPos(u.joinedAt(4, 0))
	u.log.info = eventlog.StreamInfo{FirstSeq: 1, LastSeq: 100, Msgs: 100}
	moved := false
	u.store.beforeCommit = func(s *fakeStore) {
		if !moved {
			moved = true
			s.pos = u.joinedAt(9, 0) // another writer committed 5..9
		}
	}
	all := u.records(t, 1, 12)
	u.c.deliver(all[4:6]...) // 5, 6
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.layer.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "a second incarnation", func() bool { return len(u.log.opened()) == 2 })
	u.c.deliver(all[9:12]...) // 10..12
	waitFor(t, "the commit of 10..12", func() bool { return len(u.store.commits()) == 1 })
	if st := u.log.opened(); st[0] != (eventlog.Start{Seq: 5}) || st[1] != (eventlog.Start{Seq: 10}) {
		t.Fatalf("consumer opened from %+v, want 5 then 10 (after the position the other writer moved)", st)
	}
	if c := u.store.commits()[0]; c.prev != 9 || c.next.Seq != 12 || c.counts[1] != 3 {
		t.Fatalf("commit %+v: want 9 → 12 with 3 events", c)
	}
	if acks := u.c.acked(); !slices.Equal(acks, []uint64{12}) {
		t.Fatalf("acks %v, want only 12", acks)
	}
}

// Opening over a stored position consumes after it; opening without one
// (or with one past the end of the log) resets the views, creates the
// position fresh from the batch cutoff with the log's last record as its
// target, and consumes from the cutoff's arrival time.
func TestOpen(t *testing.T) {
	const cutoff = int64(1_700_000_000_000)
	for _, tc := range []struct {
		name  string
		pos   *speedstore.Position // stored before open
		fresh bool
	}{
		{"position found", &speedstore.Position{Seq: 7, Watermark: 1234}, false},
		{"no position", nil, true},
		{"position past the log", &speedstore.Position{Seq: 70}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnit(t, fixedCutoff(cutoff))
			if tc.pos != nil {
				p := u.joinedAt(tc.pos.Seq, tc.pos.Watermark)
				u.store.setPos(p)
			}
			u.log.info = eventlog.StreamInfo{FirstSeq: 1, LastSeq: 20, Msgs: 20, LastTime: time.UnixMilli(cutoff + 5000)}
			u.c.info = eventlog.Info{AckFloor: 11}
			lp := u.loop()
			defer lp.close()
			if err := lp.open(context.Background()); err != nil {
				t.Fatalf("open: %v", err)
			}
			st := u.log.opened()
			if !tc.fresh {
				if len(u.store.resets) != 0 || len(u.store.legacy) != 0 || len(u.store.commits()) != 0 || st[0] != (eventlog.Start{Seq: 8}) ||
					lp.committed != 7 || lp.expect != 8 || lp.wm.Max != 1234 || lp.freshFrom != 0 {
					t.Fatalf("resets %v, commits %v, start %+v, committed %d, expect %d, watermark %d: want the stored position used",
						u.store.resets, u.store.commits(), st, lp.committed, lp.expect, lp.wm.Max)
				}
				return
			}
			var keys []string
			for _, v := range u.views {
				keys = append(keys, v.StateKey())
			}
			cs := u.store.commits()
			if len(u.store.resets) != 1 || !slices.Equal(u.store.resets[0], keys) {
				t.Fatalf("resets %v, want %v", u.store.resets, keys)
			}
			if len(u.store.legacy) != 1 || !slices.Equal(u.store.legacy[0], keys) {
				t.Fatalf("legacy state dropped for %v, want once for %v (partition 0 starting fresh)", u.store.legacy, keys)
			}
			if len(cs) != 1 || cs[0].prev != 0 || cs[0].next.Seq != 0 || cs[0].next.Target != 20 || cs[0].freshFrom != cutoff ||
				cs[0].next.Owner != u.layer.owner || slices.ContainsFunc(cs[0].counts, func(n float64) bool { return n != 0 }) {
				t.Fatalf("commits %+v: want one empty commit creating the position, target 20, from the cutoff", cs)
			}
			if !st[0].Time.Equal(time.UnixMilli(cutoff)) || st[0].Seq != 0 || lp.committed != 0 || lp.expect != 12 || lp.freshFrom != cutoff {
				t.Fatalf("start %+v, committed %d, expect %d, fresh from %d: want from the cutoff, after the ack floor",
					st[0], lp.committed, lp.expect, lp.freshFrom)
			}
			if got := u.layer.Status()["orders"].Partitions[0].Rebuilds; got != 1 {
				t.Fatalf("rebuilds %d, want 1", got)
			}
		})
	}
}

// sharesOf is a Shares that runs work for the partitions in run only,
// until stop, and records what it was handed.
type sharesOf struct {
	run   []leases.Partition
	stop  chan struct{}
	given []leases.Partition
}

func (s *sharesOf) Owner() string { return "me" }

func (s *sharesOf) Run(ctx context.Context, parts []leases.Partition, work func(context.Context, leases.Partition) error) error {
	s.given = parts
	wctx, cancel := context.WithCancel(ctx)
	go func() { <-s.stop; cancel() }()
	var wg sync.WaitGroup
	for _, p := range s.run {
		wg.Go(func() { _ = work(wctx, p) })
	}
	wg.Wait()
	cancel()
	return nil
}

// Run hands every partition of the streams with views to the Shares and
// runs the ones it is given: their status names this process as owner
// while they run. A partition taken away while the layer runs is counted
// (braid_speed_lease_lost_total) and its status loses the owner.
func TestRunRunsThePartitionsItIsGiven(t *testing.T) {
	yaml := strings.Replace(unitYAML, "allowed_lateness: 1h", "allowed_lateness: 1h\n    partitions: 3", 1)
	yaml = strings.Replace(yaml, "views:", "  clicks:\n    time: ts\n    fields: { ts: time }\nviews:", 1)
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	j := &journal{}
	c := &fakeConsumer{j: j}
	fl := &fakeLog{j: j, c: c}
	shares := &sharesOf{run: []leases.Partition{{Stream: "orders", P: 1}}, stop: make(chan struct{})}
	reg := prometheus.NewRegistry()
	l := New(Config{BatchSize: 100, MaxWait: 10 * time.Millisecond, Epoch: time.Second}, fl, &fakeStore{j: j}, nil, shares, cat, testenv.Logger(t), reg)
	if l.owner != "me" {
		t.Fatalf("owner %q, want the shares' owner", l.owner)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	owners := func() []string {
		var out []string
		for _, p := range l.Status()["orders"].Partitions {
			out = append(out, fmt.Sprint(p.Partition, ":", p.Owner))
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(fl.opened()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := owners(); !slices.Equal(got, []string{"0:", "1:me", "2:"}) || len(fl.opened()) == 0 {
		t.Fatalf("partition owners %v, consumers %v: want partition 1 run here", got, fl.opened())
	}
	if _, ok := l.Status()["clicks"]; ok {
		t.Fatalf("status of clicks, a stream without views: %+v", l.Status())
	}
	close(shares.stop)
	for time.Now().Before(deadline) && testenv.CounterValue(t, reg, "braid_speed_lease_lost_total", map[string]string{"stream": "orders"}) != 1 {
		time.Sleep(10 * time.Millisecond)
	}
	if got := owners(); !slices.Equal(got, []string{"0:", "1:", "2:"}) {
		t.Fatalf("partition owners %v after it was taken away: want none here", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []leases.Partition{{Stream: "orders", P: 0}, {Stream: "orders", P: 1}, {Stream: "orders", P: 2}}
	if !slices.Equal(shares.given, want) {
		t.Fatalf("partitions handed to the shares %v, want %v", shares.given, want)
	}
}

// close hands the records held behind a gap back to the server at once.
func TestCloseHandsHeldRecordsBack(t *testing.T) {
	u := newUnit(t, nil)
	lp := u.openAt(t, 4)
	all := u.records(t, 1, 9)
	lp.accept([]eventlog.Msg{all[6], all[8]}) // 7, 9: 5 is missing
	lp.close()
	naks := append([]uint64(nil), u.c.naks...)
	slices.Sort(naks)
	if !slices.Equal(naks, []uint64{7, 9}) || len(u.c.acked()) != 0 {
		t.Fatalf("naks %v, acks %v: want 7 and 9 handed back", naks, u.c.acked())
	}
}

// The records of a batch whose commit failed (a Redis failover, another
// writer) and of the batch in hand go back at close, so the next
// incarnation gets them at once, not after the consumer's ack wait.
func TestCloseHandsUncommittedRecordsBack(t *testing.T) {
	u := newUnit(t, nil)
	lp := u.openAt(t, 4)
	u.store.setPos(u.joinedAt(6, 0)) // another writer: the commit fails
	lp.accept(u.records(t, 5, 6))
	if err := lp.foldAccepted(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := lp.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := lp.settle(); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("settle: %v, want ErrConflict", err)
	}
	lp.accept(u.records(t, 7, 8)) // taken into the next batch, not committed
	if err := lp.foldAccepted(context.Background()); err != nil {
		t.Fatal(err)
	}
	lp.close()
	naks := append([]uint64(nil), u.c.naks...)
	slices.Sort(naks)
	if !slices.Equal(naks, []uint64{5, 6, 7, 8}) || len(u.c.acked()) != 0 {
		t.Fatalf("naks %v, acks %v: want 5 to 8 handed back", naks, u.c.acked())
	}
}

// A gap found while another writer moved the position ends the loop with
// ErrConflict; the records the log dropped are passed over.
func TestGapChecks(t *testing.T) {
	u := newUnit(t, nil)
	lp := u.openAt(t, 4)
	all := u.records(t, 1, 30)
	lp.accept([]eventlog.Msg{all[6]}) // 7: 5 and 6 are missing
	if refold, err := lp.gap(context.Background()); refold || err != nil || lp.gapSince.IsZero() {
		t.Fatalf("gap: %v %v (since %v): want a gap noted, nothing else", refold, err, lp.gapSince)
	}
	// The log dropped 5 and 6 (retention) and the gap stayed open long.
	u.log.info.FirstSeq = 7
	lp.gapSince, lp.lastPosCheck = time.Now().Add(-gapTimeout), time.Time{}
	if refold, err := lp.gap(context.Background()); !refold || err != nil || lp.expect != 7 {
		t.Fatalf("gap: %v %v, expect %d: want the dropped records passed over", refold, err, lp.expect)
	}
	if m, ok := lp.take(); !ok || m.Seq != 7 {
		t.Fatalf("take: %v %v, want 7", m.Seq, ok)
	}
	// Another writer moves the position while 9 waits for 8.
	lp.accept([]eventlog.Msg{all[8]})
	u.store.setPos(u.joinedAt(20, 0))
	lp.lastPosCheck = time.Time{}
	if _, err := lp.gap(context.Background()); !errors.Is(err, speedstore.ErrConflict) || !strings.Contains(err.Error(), "position is 20") {
		t.Fatalf("gap: %v, want ErrConflict", err)
	}
}

type fixedCutoff int64

func (c fixedCutoff) StreamCutoff(context.Context, string) (int64, error) { return int64(c), nil }

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
