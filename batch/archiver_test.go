package batch_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

func startArchiver(t *testing.T, e *env) (stop func()) {
	t.Helper()
	a := batch.NewArchiver(batch.ArchiverConfig{MaxRows: 700, MaxDelay: 200 * time.Millisecond, FetchSize: 300, FetchWait: 100 * time.Millisecond},
		e.log, e.lk, e.cat, quietLogger(), prometheus.NewRegistry())
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

func waitArchived(t *testing.T, e *env, stream string) lake.Checkpoint {
	t.Helper()
	info, err := e.log.Info(context.Background(), stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cp lake.Checkpoint
	waitFor(t, "archiver to reach the log's last sequence", func() bool {
		cp, err = e.lk.Checkpoint(stream)
		if err != nil {
			t.Fatal(err)
		}
		return cp.Seq == info.LastSeq
	})
	return cp
}

// logEvents reads the clean log of orders independently of the archiver:
// the place (record sequence, index in record) of every event id, and the
// number of records.
func logEvents(t *testing.T, e *env) (refs map[string]eventlog.EventRef, events, records int) {
	t.Helper()
	js := e.log.JetStream()
	info, err := e.log.Info(context.Background(), "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	refs = map[string]eventlog.EventRef{}
	msgs := testenv.StoredMessages(t, js, e.log.StreamName("orders", 0))
	for k, data := range msgs {
		seq := info.FirstSeq + uint64(k)
		if err := eventlog.Unpack(data, func(i int, id, _ []byte) error {
			if _, dup := refs[string(id)]; dup {
				t.Fatalf("log holds id %s twice", id)
			}
			refs[string(id)] = eventlog.EventRef{Seq: seq, Index: i}
			events++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(testenv.StoredEvents(t, js, e.log.StreamName("orders", 0))); n != events {
		t.Fatalf("StoredEvents %d, unpacked %d", n, events)
	}
	return refs, events, len(msgs)
}

// checkLake compares the lake with the published orders: every one exactly
// once, with its values, at its place in the log.
func checkLake(t *testing.T, e *env, orders []order) {
	t.Helper()
	info, err := e.log.Info(context.Background(), "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	refs, events, records := logEvents(t, e)
	if events != len(orders) || uint64(records) != info.Msgs {
		t.Fatalf("log holds %d events in %d records (info %d), published %d", events, records, info.Msgs, len(orders))
	}
	if records >= len(orders) {
		t.Fatalf("log holds %d records for %d events: want events packed", records, len(orders))
	}
	db := storagetest.DuckDB(t)
	src := lakeSource(t, e, "orders")
	var n, dpos, dseq, did, minIdx, maxIdx int
	var minSeq, maxSeq int64
	if err := db.QueryRow("SELECT count(*), count(DISTINCT (_seq, _idx)), count(DISTINCT _seq), count(DISTINCT _id), min(_seq), max(_seq), min(_idx), max(_idx) FROM "+src).
		Scan(&n, &dpos, &dseq, &did, &minSeq, &maxSeq, &minIdx, &maxIdx); err != nil {
		t.Fatal(err)
	}
	if n != len(orders) || dpos != n || did != n || dseq != records || minSeq != int64(info.FirstSeq) || maxSeq != int64(info.LastSeq) || minIdx != 0 {
		t.Fatalf("lake: count %d distinct (seq,idx) %d distinct seq %d distinct id %d seq %d..%d idx %d..%d; want %d stored once from %d records %d..%d",
			n, dpos, dseq, did, minSeq, maxSeq, minIdx, maxIdx, len(orders), records, info.FirstSeq, info.LastSeq)
	}
	byID := map[string]order{}
	for _, o := range orders {
		byID[o.id] = o
	}
	rows, err := db.Query("SELECT _id, _time, epoch_ms(ts), id, country, paid, amount, qty, _arrival, _seq, _idx FROM " + src)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, id2 string
		var tm, ts, arrival int64
		var country sql.NullString
		var paid sql.NullBool
		var amount sql.NullFloat64
		var qty sql.NullInt64
		var seq uint64
		var idx int
		if err := rows.Scan(&id, &tm, &ts, &id2, &country, &paid, &amount, &qty, &arrival, &seq, &idx); err != nil {
			t.Fatal(err)
		}
		o, ok := byID[id]
		if !ok {
			t.Fatalf("lake has unknown id %q", id)
		}
		if ref := refs[id]; ref != (eventlog.EventRef{Seq: seq, Index: idx}) {
			t.Fatalf("row %s at (%d,%d), the log holds it at %+v", id, seq, idx, ref)
		}
		bad := id2 != id || tm != o.ts || ts != o.ts || arrival <= 0 ||
			country.Valid != (o.country != nil) || (country.Valid && country.String != *o.country) ||
			paid.Valid != (o.paid != nil) || (paid.Valid && paid.Bool != *o.paid) ||
			amount.Valid != (o.amount != nil) || (amount.Valid && amount.Float64 != *o.amount) ||
			qty.Valid != (o.qty != nil) || (qty.Valid && qty.Int64 != *o.qty)
		if bad {
			t.Fatalf("row %s: time %d/%d country %v paid %v amount %v qty %v; want %+v", id, tm, ts, country, paid, amount, qty, o)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestArchiverExactlyOnceAcrossRestart(t *testing.T) {
	e := newEnv(t)
	orders := makeOrders(0, 3000)
	publishOrders(t, e, orders)
	stop := startArchiver(t, e)
	cp := waitArchived(t, e, "orders")
	if cp.Arrival <= 0 || cp.CoveredUntil < cp.Arrival {
		t.Fatalf("checkpoint %+v", cp)
	}
	// An idle stream's coverage follows the server clock.
	waitFor(t, "idle coverage of clicks", func() bool {
		c, _ := e.lk.Checkpoint("clicks")
		return c.CoveredUntil > 0 && c.Seq == 0
	})
	stop()
	files, _ := e.lk.Files("orders")
	if len(files) < 2 {
		t.Fatalf("want several files (MaxRows 700, two dates), got %d", len(files))
	}
	checkLake(t, e, orders)

	// A crashed writer left a file beyond the checkpoint with wrong values:
	// the restarted archiver must drop it and write the real records once.
	s := e.cat.Streams["orders"]
	junk := make([]lake.Row, 10)
	for i := range junk {
		vals := make([]logic.Value, len(s.Fields))
		vals[s.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: orders[0].ts}
		vals[s.FieldIndex("id")] = logic.Value{Kind: logic.TypeString, S: "junk"}
		junk[i] = lake.Row{Seq: cp.Seq + 1 + uint64(i/3), Index: i % 3, Arrival: 1, Event: logic.Event{ID: "junk", Time: orders[0].ts, Values: vals}}
	}
	if _, err := e.lk.Write(s, junk); err != nil {
		t.Fatal(err)
	}
	more := makeOrders(3000, 1000)
	publishOrders(t, e, more)
	info, err := e.log.Info(context.Background(), "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Duplicate ids within the dedup window are stored once by the log:
	// records of nothing but duplicates are not even appended.
	publishOrders(t, e, more[:100])
	if info2, err := e.log.Info(context.Background(), "orders", 0); err != nil || info2.LastSeq != info.LastSeq {
		t.Fatalf("log after re-publishing duplicates %+v %v, before %+v", info2, err, info)
	}
	startArchiver(t, e)
	cp2 := waitArchived(t, e, "orders")
	if cp2.Seq != info.LastSeq || cp2.Seq <= cp.Seq || cp2.CoveredUntil < cp.CoveredUntil {
		t.Fatalf("checkpoint after restart %+v (before %+v)", cp2, cp)
	}
	checkLake(t, e, append(orders, more...))
}

// lastSeq is the sequence of the last record of the log of orders.
func lastSeq(t *testing.T, e *env) uint64 {
	t.Helper()
	info, err := e.log.Info(context.Background(), "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	return info.LastSeq
}

// archiveUntil runs an archiver with cfg until the lake's checkpoint of
// orders reaches record seq, stops it (it writes what it holds), and
// returns the number of rows (events) of each file written, counted by
// DuckDB, and the writes by reason.
func archiveUntil(t *testing.T, e *env, cfg batch.ArchiverConfig, seq uint64) (sizes []int, writes map[string]float64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a := batch.NewArchiver(cfg, e.log, e.lk, e.cat, quietLogger(), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "the archiver's checkpoint", func() bool {
		cp, err := e.lk.Checkpoint("orders")
		if err != nil {
			t.Fatal(err)
		}
		return cp.Seq >= seq
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fs, err := e.lk.CommittedFiles("orders")
	if err != nil {
		t.Fatal(err)
	}
	db := storagetest.DuckDB(t)
	for _, f := range fs {
		var n, lo, hi int
		q := "SELECT count(*), min(_seq), max(_seq) FROM read_parquet('" + strings.ReplaceAll(f.Path, "'", "''") + "')"
		if err := db.QueryRow(q).Scan(&n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		if uint64(lo) != f.First || uint64(hi) != f.Last {
			t.Fatalf("file %s holds records %d..%d, named %d..%d", f.Path, lo, hi, f.First, f.Last)
		}
		sizes = append(sizes, n)
	}
	writes = map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "braid_archive_writes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					writes[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Logf("files of %v rows; writes by reason %v", sizes, writes)
	return sizes, writes
}

// The buffer is written once it holds MaxBytes of rows, long before
// MaxRows or MaxDelay, and the lake still holds every record once.
func TestArchiverWritesAtItsByteBound(t *testing.T) {
	e := newEnv(t)
	orders := makeOrders(0, 2000)
	publishOrders(t, e, orders)
	// An order's row holds about 270 bytes: 16 KiB is about 60 of them.
	const maxBytes = 16 << 10
	spans, writes := archiveUntil(t, e, batch.ArchiverConfig{MaxRows: 100_000, MaxBytes: maxBytes, MaxDelay: time.Hour, FetchSize: 20, FetchWait: 50 * time.Millisecond}, lastSeq(t, e)*9/10)
	if writes["bytes"] < 20 || writes["rows"] != 0 || writes["delay"] != 0 {
		t.Errorf("writes by reason %v: want at least 20 at the byte bound, none by rows or delay", writes)
	}
	// A write holds at most the rows that reached the bound plus one fetch
	// (FetchSize events, give or take a record of at most 7 of them).
	for _, n := range spans {
		if n > maxBytes/200+20+7 {
			t.Fatalf("a file of %d rows (rows per file %v): the byte bound was not kept", n, spans)
		}
	}
	// What the stop found unbuffered is archived by the next run, once.
	startArchiver(t, e)
	waitArchived(t, e, "orders")
	checkLake(t, e, orders)
}

// A backlog is written as soon as the fetches drained it, long before
// MaxDelay; records that trickle in to a caught-up archiver wait for
// MaxDelay (or the stop) as before, so they do not make a file each.
func TestArchiverWritesADrainedBacklogAtOnce(t *testing.T) {
	e := newEnv(t)
	orders := makeOrders(0, 3000)
	publishOrders(t, e, orders)
	cfg := batch.ArchiverConfig{MaxRows: 100_000, MaxDelay: time.Hour, FetchSize: 100, FetchWait: 50 * time.Millisecond}
	last := lastSeq(t, e)
	_, writes := archiveUntil(t, e, cfg, last)
	if writes["caught_up"] < 1 || writes["delay"] != 0 || writes["rows"] != 0 {
		t.Fatalf("writes by reason %v: want the backlog written once drained", writes)
	}
	checkLake(t, e, orders)

	// Caught up: a trickle stays buffered.
	a := batch.NewArchiver(cfg, e.log, e.lk, e.cat, quietLogger(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "the archiver to start", func() bool { return a.Status()[batch.Partition{Stream: "orders"}].Seq == last })
	more := makeOrders(3000, 5)
	for _, o := range more {
		publishOrders(t, e, []order{o})
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := lastSeq(t, e); got != last+uint64(len(more)) {
		t.Fatalf("log at %d after %d single-event records from %d", got, len(more), last)
	}
	if cp, err := e.lk.Checkpoint("orders"); err != nil || cp.Seq != last {
		t.Fatalf("checkpoint %+v %v: a trickle was written before MaxDelay", cp, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkLake(t, e, append(orders, more...))
}
