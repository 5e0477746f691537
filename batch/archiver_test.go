package batch_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
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
	info, err := e.log.Info(context.Background(), stream)
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

// checkLake compares the lake with the published orders: every one exactly
// once, with its values.
func checkLake(t *testing.T, e *env, orders []order) {
	t.Helper()
	info, err := e.log.Info(context.Background(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	if info.Msgs != uint64(len(orders)) {
		t.Fatalf("log holds %d, published %d", info.Msgs, len(orders))
	}
	db := duck(t)
	src := lakeSource(t, e, "orders")
	var n, dseq, did int
	var minSeq, maxSeq int64
	if err := db.QueryRow("SELECT count(*), count(DISTINCT _seq), count(DISTINCT _id), min(_seq), max(_seq) FROM "+src).Scan(&n, &dseq, &did, &minSeq, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if n != len(orders) || dseq != n || did != n || minSeq != 1 || maxSeq != int64(info.LastSeq) {
		t.Fatalf("lake: count %d distinct seq %d distinct id %d seq %d..%d; want %d stored once", n, dseq, did, minSeq, maxSeq, len(orders))
	}
	byID := map[string]order{}
	for _, o := range orders {
		byID[o.id] = o
	}
	rows, err := db.Query("SELECT _id, _time, epoch_ms(ts), id, country, paid, amount, qty, _arrival FROM " + src)
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
		if err := rows.Scan(&id, &tm, &ts, &id2, &country, &paid, &amount, &qty, &arrival); err != nil {
			t.Fatal(err)
		}
		o, ok := byID[id]
		if !ok {
			t.Fatalf("lake has unknown id %q", id)
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
		junk[i] = lake.Row{Seq: cp.Seq + 1 + uint64(i), Arrival: 1, Event: logic.Event{ID: "junk", Time: orders[0].ts, Values: vals}}
	}
	if _, err := e.lk.Write(s, junk); err != nil {
		t.Fatal(err)
	}
	more := makeOrders(3000, 1000)
	publishOrders(t, e, more)
	// Duplicate ids within the dedup window are stored once by the log.
	publishOrders(t, e, more[:100])
	startArchiver(t, e)
	cp2 := waitArchived(t, e, "orders")
	if cp2.Seq != 4000 || cp2.CoveredUntil < cp.CoveredUntil {
		t.Fatalf("checkpoint after restart %+v (before %+v)", cp2, cp)
	}
	checkLake(t, e, append(orders, more...))
}

// archiveUntil runs an archiver with cfg until the lake's checkpoint of
// orders reaches seq, stops it (it writes what it holds), and returns the
// number of records of each file written and the writes by reason.
func archiveUntil(t *testing.T, e *env, cfg batch.ArchiverConfig, seq uint64) (spans []uint64, writes map[string]float64) {
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
	for _, f := range fs {
		spans = append(spans, f.Last-f.First+1)
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
	t.Logf("files of %v records; writes by reason %v", spans, writes)
	return spans, writes
}

// The buffer is written once it holds MaxBytes of rows, long before
// MaxRows or MaxDelay, and the lake still holds every record once.
func TestArchiverWritesAtItsByteBound(t *testing.T) {
	e := newEnv(t)
	orders := makeOrders(0, 2000)
	publishOrders(t, e, orders)
	// An order's row holds about 270 bytes: 16 KiB is about 60 of them.
	const maxBytes = 16 << 10
	spans, writes := archiveUntil(t, e, batch.ArchiverConfig{MaxRows: 100_000, MaxBytes: maxBytes, MaxDelay: time.Hour, FetchSize: 20, FetchWait: 50 * time.Millisecond}, 1800)
	if writes["bytes"] < 20 || writes["rows"] != 0 || writes["delay"] != 0 {
		t.Errorf("writes by reason %v: want at least 20 at the byte bound, none by rows or delay", writes)
	}
	// A write holds at most the rows that reached the bound plus one fetch.
	for _, n := range spans {
		if n > maxBytes/200+20 {
			t.Fatalf("a file of %d records (spans %v): the byte bound was not kept", n, spans)
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
	_, writes := archiveUntil(t, e, cfg, 3000)
	if writes["caught_up"] < 1 || writes["delay"] != 0 || writes["rows"] != 0 {
		t.Fatalf("writes by reason %v: want the backlog written once drained", writes)
	}
	checkLake(t, e, orders)

	// Caught up: a trickle stays buffered.
	a := batch.NewArchiver(cfg, e.log, e.lk, e.cat, quietLogger(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "the archiver to start", func() bool { return a.Status()["orders"].Seq == 3000 })
	more := makeOrders(3000, 5)
	for _, o := range more {
		publishOrders(t, e, []order{o})
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if cp, err := e.lk.Checkpoint("orders"); err != nil || cp.Seq != 3000 {
		t.Fatalf("checkpoint %+v %v: a trickle was written before MaxDelay", cp, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkLake(t, e, append(orders, more...))
}
