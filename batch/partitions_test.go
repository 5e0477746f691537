package batch_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// testShares hands stream partitions to named members as the test says:
// each member's Run runs the work of the partitions given to it, and
// stops (cancels and waits for) the work of a partition given to another.
type testShares struct {
	mu    sync.Mutex
	owner map[batch.Partition]string
}

func (s *testShares) give(member string, parts ...batch.Partition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range parts {
		s.owner[p] = member
	}
}

func (s *testShares) owns(member string, p batch.Partition) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner[p] == member
}

// member is the Shares of one archiver.
type member struct {
	s    *testShares
	name string
}

func (m member) Run(ctx context.Context, parts []batch.Partition, work func(context.Context, batch.Partition) error) error {
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	held := map[batch.Partition]running{}
	stop := func(p batch.Partition) {
		held[p].cancel()
		<-held[p].done
		delete(held, p)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range parts {
			_, on := held[p]
			switch own := m.s.owns(m.name, p); {
			case own && !on:
				pctx, cancel := context.WithCancel(ctx)
				r := running{cancel, make(chan struct{})}
				held[p] = r
				go func() {
					defer close(r.done)
					_ = work(pctx, p)
				}()
			case !own && on:
				stop(p)
			}
		}
		select {
		case <-ctx.Done():
			for p := range held {
				stop(p)
			}
			return nil
		case <-tick.C:
		}
	}
}

// startShared starts an archiver of e with shares, as a process of its
// own: with a lake handle of its own; stop cancels it and waits for it to
// flush and return.
func startShared(t *testing.T, e *env, sh batch.Shares) (stop func()) {
	t.Helper()
	lk, err := lake.OpenDir(e.dir + "/lake")
	if err != nil {
		t.Fatal(err)
	}
	a := batch.NewArchiver(batch.ArchiverConfig{MaxRows: 700, MaxDelay: 200 * time.Millisecond, FetchSize: 300, FetchWait: 100 * time.Millisecond, Retry: 200 * time.Millisecond, Shares: sh},
		e.log, lk, e.cat, quietLogger(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("archiver returned %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("archiver did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitPartsArchived waits until the lake's checkpoint of every partition
// of orders reaches the partition's last log record.
func waitPartsArchived(t *testing.T, e *env) {
	t.Helper()
	for p := range e.cat.Streams["orders"].Partitions {
		info, err := e.log.Info(context.Background(), "orders", p)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the lake to reach the end of a partition's log", func() bool {
			cp, err := e.lk.PartCheckpoint("orders", p)
			if err != nil {
				t.Fatal(err)
			}
			return cp.Seq == info.LastSeq
		})
	}
}

// checkPartLake compares the lake with the published orders and with the
// partitions' logs, read independently of the archiver: every order once,
// at its place (partition, sequence, index) in the log; the rows, their
// distinct places and the orders are as many.
func checkPartLake(t *testing.T, e *env, orders []order) {
	t.Helper()
	js := e.log.JetStream()
	refs := map[string]eventlog.EventRef{}
	for p := range e.cat.Streams["orders"].Partitions {
		info, err := e.log.Info(context.Background(), "orders", p)
		if err != nil {
			t.Fatal(err)
		}
		for k, data := range testenv.StoredMessages(t, js, e.log.StreamName("orders", p)) {
			seq := info.FirstSeq + uint64(k)
			if err := eventlog.Unpack(data, func(i int, id, _ []byte) error {
				if _, dup := refs[string(id)]; dup {
					t.Fatalf("the log holds id %s twice", id)
				}
				refs[string(id)] = eventlog.EventRef{Part: p, Seq: seq, Index: i}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(refs) != len(orders) {
		t.Fatalf("the log holds %d events, published %d", len(refs), len(orders))
	}
	parts := map[int]bool{}
	for _, r := range refs {
		parts[r.Part] = true
	}
	if len(parts) != e.cat.Streams["orders"].Partitions {
		t.Fatalf("the orders went to partitions %v", parts)
	}
	db := storagetest.DuckDB(t)
	src := lakeSource(t, e, "orders")
	var n, distinct int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT (_part, _seq, _idx)) FROM "+src).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != len(orders) || distinct != n {
		t.Fatalf("the lake holds %d rows, %d distinct (_part, _seq, _idx); want the %d orders once", n, distinct, len(orders))
	}
	rows, err := db.Query("SELECT _id, _part, _seq, _idx, _time FROM " + src)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	byID := map[string]order{}
	for _, o := range orders {
		byID[o.id] = o
	}
	for rows.Next() {
		var id string
		var part, idx int
		var seq uint64
		var tm int64
		if err := rows.Scan(&id, &part, &seq, &idx, &tm); err != nil {
			t.Fatal(err)
		}
		if ref := refs[id]; ref != (eventlog.EventRef{Part: part, Seq: seq, Index: idx}) {
			t.Fatalf("row %s at (%d,%d,%d), the log holds it at %+v", id, part, seq, idx, ref)
		}
		if o, ok := byID[id]; !ok || o.ts != tm {
			t.Fatalf("row %s: time %d, want %+v", id, tm, o)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestArchiversSharePartitions: two archivers share the 4 partitions of a
// stream; while orders arrive, one hands a partition to the other, then
// stops, its partitions handed over too. The lake holds every log record
// exactly once, at its place in its partition's log, and a batch run over
// it equals an independent computation.
func TestArchiversSharePartitions(t *testing.T) {
	e := newPartEnv(t, 4)
	sh := &testShares{owner: map[batch.Partition]string{}}
	p := func(n int) batch.Partition { return batch.Partition{Stream: "orders", P: n} }
	sh.give("a", p(0), p(1), batch.Partition{Stream: "clicks"})
	sh.give("b", p(2), p(3))
	stopA := startShared(t, e, member{sh, "a"})
	startShared(t, e, member{sh, "b"})

	orders := makeOrders(0, 3000)
	publishOrders(t, e, orders[:1000])
	sh.give("b", p(1)) // a live handover: a stops partition 1, b starts it from the lake
	publishOrders(t, e, orders[1000:2000])
	stopA()
	sh.give("b", p(0), batch.Partition{Stream: "clicks"})
	publishOrders(t, e, orders[2000:])
	waitPartsArchived(t, e)
	checkPartLake(t, e, orders)

	views, err := batchviews.OpenDir(filepath.Join(e.dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Log: logEnds{e.log}, SettleTimeout: 5 * time.Minute},
		e.lk, views, nil, e.cat, quietLogger(), prometheus.NewRegistry())
	run, err := r.Run(context.Background(), nil)
	if err != nil || run.Status != batchviews.StatusSucceeded || run.CoversRequest == nil || !*run.CoversRequest || run.RowsRead != int64(len(orders)) {
		t.Fatalf("run %+v %v; want every order read", run, err)
	}
	ver, err := views.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareView(t, views, ver, e.cat.Views[n], orders)
	}
}

// TestOnDemandRunPartitioned: right after the log acknowledged them, an
// on-demand run over a stream of 3 partitions covers every order (it
// waits until every partition's records are in the lake and the stream's
// coverage passes every partition's last arrival epoch), and its views
// equal an independent computation.
func TestOnDemandRunPartitioned(t *testing.T) {
	ctx := context.Background()
	e := newPartEnv(t, 3)
	views, err := batchviews.OpenDir(filepath.Join(e.dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	startArchiver(t, e)
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Log: logEnds{e.log}, SettleTimeout: 5 * time.Minute},
		e.lk, views, nil, e.cat, quietLogger(), prometheus.NewRegistry())
	orders := makeOrders(0, 2000)
	publishOrders(t, e, orders)
	var last int64
	for p := range 3 {
		info, err := e.log.Info(ctx, "orders", p)
		if err != nil {
			t.Fatal(err)
		}
		if info.LastSeq == 0 {
			t.Fatalf("partition %d got no orders", p)
		}
		last = max(last, info.LastTime.UnixMilli())
	}
	run, err := r.Run(ctx, nil)
	if err != nil || run.Status != batchviews.StatusSucceeded || run.CoversRequest == nil || !*run.CoversRequest {
		t.Fatalf("run %+v %v", run, err)
	}
	if run.RowsRead != int64(len(orders)) || run.Cutoffs["by_country"] <= last {
		t.Fatalf("the run read %d rows with cutoff %d; want all %d orders, the last arriving at %d", run.RowsRead, run.Cutoffs["by_country"], len(orders), last)
	}
	ver, err := views.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareView(t, views, ver, e.cat.Views[n], orders)
	}
	checkPartLake(t, e, orders)
}

// TestAuditPartitions: an audit of a stream of 2 partitions reads the
// speed position of each, recomputes each partition's events up to its
// own position, says the lake is behind when one partition's lake is, and
// leaves out a too-late event by its partition, sequence and index (the
// event at the same sequence and index of the other partition counts).
func TestAuditPartitions(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.Parse([]byte(strings.Replace(auditConfig, "    time: ts\n", "    time: ts\n    partitions: 2\n", 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	s, v := cat.Streams["pay"], cat.Views["pay_by_country"]
	if s.Partitions != 2 {
		t.Fatalf("pay has %d partitions", s.Partitions)
	}
	r := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	// Event i goes to partition i%2, as its partition's event j = i/2, 3
	// events a record: at (_seq, _idx) = (j/3+1, j%3).
	const perRecord = 3
	at := func(j int) uint64 { return uint64(j/perRecord + 1) }
	const n, speedOf1 = 3000, 1000 // the speed layer has partition 1's records up to that of its event 999
	late := eventlog.EventRef{Part: 1, Seq: at(500), Index: 500 % perRecord}
	rows := [2][]lake.Row{}
	deltas := [2]*logic.Delta{v.NewDelta(), v.NewDelta()}
	for i := range n {
		p, j := i%2, i/2
		arr := base + 600_000 + int64(i)*3
		raw := `{"ts":` + itoa(base+r.Int64N(600_000)) + `,"user":"u` + itoa(int64(r.IntN(500))) + `","country":"` +
			[]string{"DE", "FR", "US"}[r.IntN(3)] + `","amount":` + itoa(int64(r.IntN(100000))) + `.25}`
		ev, _, err := s.Prepare([]byte(raw), arr)
		if err != nil {
			t.Fatal(err)
		}
		rows[p] = append(rows[p], lake.Row{Part: p, Seq: at(j), Index: j % perRecord, Arrival: arr, Event: ev})
		if (p == 0 || at(j) <= at(speedOf1-1)) && !(p == late.Part && at(j) == late.Seq && j%perRecord == late.Index) {
			deltas[p].Fold(logic.EpochOf(arr, time.Second), &ev)
		}
	}
	lk, err := lake.OpenDir(filepath.Join(t.TempDir(), "lake"))
	if err != nil {
		t.Fatal(err)
	}
	commit := func(p int, rs []lake.Row) {
		t.Helper()
		if _, err := lk.Write(s, rs); err != nil {
			t.Fatal(err)
		}
		last := rs[len(rs)-1]
		if err := lk.CommitPart("pay", p, lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}); err != nil {
			t.Fatal(err)
		}
	}
	commit(0, rows[0])
	commit(1, rows[1][:speedOf1-10]) // partition 1's lake short of its speed position
	rdb := testenv.StartRedis(t).Client(t)
	st := speedstore.New(rdb, testenv.Namespace(t))
	pos := [2]uint64{at(n/2 - 1), at(speedOf1 - 1)}
	for p := range 2 {
		if err := st.Commit(ctx, "pay", p, 0, speedstore.Position{Seq: pos[p]}, 0, []*logic.Delta{deltas[p]}); err != nil {
			t.Fatal(err)
		}
	}
	req := batch.AuditRequest{View: v, From: math.MinInt64, To: math.MaxInt64, Late: []eventlog.EventRef{late}}
	if _, err := batch.Audit(ctx, lk, speedSnapshot{st}, req); !errors.Is(err, batch.ErrLakeBehind) {
		t.Fatalf("partition 1's lake behind its speed position: want ErrLakeBehind, got %v", err)
	}
	commit(1, rows[1][speedOf1-10:])
	rep, err := batch.Audit(ctx, lk, speedSnapshot{st}, req)
	if err != nil {
		t.Fatal(err)
	}
	// Partition 1's events up to its position: those of its records up to
	// at(speedOf1-1), whole records, less the late one.
	want1 := 0
	for j := range n / 2 {
		if at(j) <= pos[1] {
			want1++
		}
	}
	if !rep.OK || rep.Events != int64(n/2+want1-1) || rep.Late != 1 || rep.Seq != pos[0]+pos[1] || !slices.Equal(rep.Positions, pos[:]) {
		t.Fatalf("audit: ok %v, %d events (want %d), late %d, seq %d, positions %v (want %v); windows %+v", rep.OK, rep.Events, n/2+want1-1, rep.Late, rep.Seq, rep.Positions, pos, rep.Windows)
	}
	// Without the late ref, the event shows as drift.
	req.Late = nil
	if rep, err := batch.Audit(ctx, lk, speedSnapshot{st}, req); err != nil || rep.OK {
		t.Fatalf("audit without the late event's ref: ok %v %v; want drift", rep != nil && rep.OK, err)
	}
}
