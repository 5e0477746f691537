package batch_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/storage/storagetest"
)

// TestArchiverTrimsOnlyArchivedRecords: with every record older than
// nats.max_age (the archiver's clock runs two hours ahead), the archiver
// trims the log while it archives a backlog, yet at no moment does the log
// lack a record the lake has not committed; in the end the log is empty
// and the lake holds every event once.
func TestArchiverTrimsOnlyArchivedRecords(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	orders := makeOrders(0, 3000)
	publishOrders(t, e, orders)
	last := lastSeq(t, e)
	cfg := batch.ArchiverConfig{MaxRows: 700, MaxDelay: 200 * time.Millisecond, FetchSize: 300, FetchWait: 100 * time.Millisecond,
		LogMaxAge: time.Hour, UpkeepEvery: 20 * time.Millisecond, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}
	a := batch.NewArchiver(cfg, e.log, e.lk, e.cat, quietLogger(), prometheus.NewRegistry())
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("archiver returned %v", err)
		}
	}()

	// The log's first record is read before the lake's checkpoint, which
	// only grows: first <= checkpoint+1 at the first read means nothing
	// unarchived was trimmed by then.
	sample := func() (first, msgs, cp uint64) {
		info, err := e.log.Info(ctx, "orders", 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := e.lk.Checkpoint("orders")
		if err != nil {
			t.Fatal(err)
		}
		if info.FirstSeq > c.Seq+1 { // an empty log starts after its last record
			t.Fatalf("the log starts at %d, the lake holds up to %d: unarchived records were trimmed", info.FirstSeq, c.Seq)
		}
		return info.FirstSeq, info.Msgs, c.Seq
	}
	trimmedTo := func(seq uint64) func() bool {
		return func() bool {
			first, msgs, cp := sample()
			return cp == seq && msgs == 0 && first == seq+1
		}
	}
	waitFor(t, "the log trimmed of the archived backlog", trimmedTo(last))

	more := makeOrders(3000, 1000)
	publishOrders(t, e, more)
	waitFor(t, "the log trimmed of new records once archived", trimmedTo(lastSeq(t, e)))

	db := storagetest.DuckDB(t)
	var n, ids int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT _id) FROM "+lakeSource(t, e, "orders")).Scan(&n, &ids); err != nil {
		t.Fatal(err)
	}
	if want := len(orders) + len(more); n != want || ids != want {
		t.Fatalf("lake holds %d rows of %d ids, want %d once each", n, ids, want)
	}
}
