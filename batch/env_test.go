package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/tests/testenv"
)

const testConfig = `
epoch: 1s
streams:
  orders:
    time: ts
    id: id
    fields: {ts: time, id: string, country: string, amount: float, qty: int, paid: bool}
  clicks:
    time: at
    fields: {at: time, page: string}
views:
  by_country:
    stream: orders
    window: 10s
    group_by: [country, paid]
    measures: {n: count(), total: sum(amount), avg_qty: avg(qty), lo: min(amount), hi: max(qty), nq: count(qty)}
  by_qty_hop:
    stream: orders
    window: 20s
    hop: 5s
    group_by: [qty]
    measures: {n: count(), hi: max(amount), lo: min(qty)}
  all_orders:
    stream: orders
    window: 1m
    measures: {n: count(), total: sum(qty)}
  clicks_by_page:
    stream: clicks
    window: 10s
    group_by: [page]
    measures: {n: count()}
`

// order is a published test event, kept independently of Braid's types.
type order struct {
	id      string
	ts      int64
	country *string
	paid    *bool
	amount  *float64
	qty     *int64
}

type env struct {
	cat *config.Catalog
	log *eventlog.Log
	lk  *lake.Lake
	dir string
}

func newEnv(t *testing.T) *env { return newPartEnv(t, 1) }

// newPartEnv is newEnv with the orders stream split into parts partitions
// (by its id).
func newPartEnv(t *testing.T, parts int) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	if parts > 1 {
		sc := cfg.Streams["orders"]
		sc.Partitions = parts
		cfg.Streams["orders"] = sc
	}
	cat, err := cfg.Compile([]byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	if got := max(1, cat.Streams["orders"].Partitions); got != parts {
		t.Fatalf("orders has %d partitions, want %d", got, parts)
	}
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	l, err := eventlog.Open(context.Background(), js, cat.StreamOrder, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute,
		Partitions: map[string]int{"orders": parts}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lk, err := lake.OpenDir(dir + "/lake")
	if err != nil {
		t.Fatal(err)
	}
	return &env{cat: cat, log: l, lk: lk, dir: dir}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// makeOrders builds n orders numbered from first; event times cross a UTC
// midnight so the lake gets several date partitions.
func makeOrders(first, n int) []order {
	base := time.Date(2024, 5, 1, 23, 40, 0, 0, time.UTC).UnixMilli()
	countries := []string{"US", "FR", "DE"}
	out := make([]order, 0, n)
	for i := first; i < first+n; i++ {
		o := order{id: fmt.Sprintf("o-%d", i), ts: base + int64(i)*997 + int64(i%13)*50}
		if i%6 != 0 {
			c := countries[i%3]
			o.country = &c
		}
		if i%5 != 0 {
			p := i%2 == 0
			o.paid = &p
		}
		if i%7 != 0 {
			a := float64(i%101)*1.5 - 20.25
			o.amount = &a
		}
		if i%4 != 0 {
			q := int64(i%9) - 2
			o.qty = &q
		}
		out = append(out, o)
	}
	return out
}

// json is the order as a producer sends it.
func (o order) json() []byte {
	m := map[string]any{"id": o.id, "ts": o.ts}
	if o.country != nil {
		m["country"] = *o.country
	}
	if o.paid != nil {
		m["paid"] = *o.paid
	}
	if o.amount != nil {
		m["amount"] = *o.amount
	}
	if o.qty != nil {
		m["qty"] = *o.qty
	}
	raw, _ := json.Marshal(m)
	return raw
}

func publishOrders(t *testing.T, e *env, orders []order) {
	t.Helper()
	s := e.cat.Streams["orders"]
	var recs []eventlog.Record
	calls := 0
	flush := func() {
		if err := e.log.Publish(context.Background(), "orders", recs); err != nil {
			t.Fatal(err)
		}
		recs = recs[:0]
		calls++
	}
	for _, o := range orders {
		raw := o.json()
		ev, rec, err := s.Prepare(raw, time.Now().UnixMilli())
		if err != nil {
			t.Fatalf("prepare %s: %v", raw, err)
		}
		recs = append(recs, eventlog.Record{ID: ev.ID, Data: rec, Part: s.PartitionOf(&ev)})
		// Each Publish call is one log record (per partition): pack
		// records of 1..7 events in turn so every test reads multi-event
		// records.
		if len(recs) == 1+calls%7 {
			flush()
		}
	}
	if len(recs) > 0 {
		flush()
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lakeSource(t *testing.T, e *env, stream string) string {
	t.Helper()
	files, err := e.lk.Files(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no committed files for %s", stream)
	}
	q := make([]string, len(files))
	for i, f := range files {
		q[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
	}
	return "read_parquet([" + strings.Join(q, ",") + "])"
}
