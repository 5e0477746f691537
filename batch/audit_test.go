package batch_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

const auditConfig = `
epoch: 1s
streams:
  pay:
    time: ts
    fields: {ts: time, user: string, country: string, amount: float}
views:
  pay_by_country:
    stream: pay
    window: 1m
    group_by: [country]
    measures:
      n: count()
      revenue: sum(amount)
      users: count_distinct(user)
      p50: quantile(amount, 0.5)
      p99: quantile(amount, 0.99)
`

// TestAuditFindsDrift: an audit of an honest speed layer reports every
// window within its bounds; after one cell is tampered with in Redis, the
// audit names that window and measure; with the lake behind the speed
// position it says so instead of reporting drift.
func TestAuditFindsDrift(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.Parse([]byte(auditConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	s, v := cat.Streams["pay"], cat.Views["pay_by_country"]
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	var rows []lake.Row
	d := v.NewDelta()
	for i := 0; i < 6000; i++ {
		arr := base + 600_000 + int64(i)*3
		raw := `{"ts":` + itoa(base+r.Int64N(600_000)) + `,"user":"u` + itoa(int64(r.IntN(3000))) + `","country":"` +
			[]string{"DE", "FR", "US"}[r.IntN(3)] + `","amount":` + itoa(int64(r.IntN(100000))) + `.25}`
		ev, _, err := s.Prepare([]byte(raw), arr)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, lake.Row{Seq: uint64(i + 1), Arrival: arr, Event: ev})
		d.Fold(logic.EpochOf(arr, time.Second), &ev)
	}
	lk, err := lake.Open(filepath.Join(t.TempDir(), "lake"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lk.Write(s, rows[:5000]); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("pay", lake.Checkpoint{Seq: 5000, Arrival: rows[4999].Arrival, CoveredUntil: rows[4999].Arrival + 1}); err != nil {
		t.Fatal(err)
	}
	rdb := testenv.StartRedis(t).Client(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(rdb, ns)
	if err := st.Commit(ctx, "pay", 0, speedstore.Position{Seq: 6000}, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	req := batch.AuditRequest{View: v, From: math.MinInt64, To: math.MaxInt64}
	if _, err := batch.Audit(ctx, lk, st, req); !errors.Is(err, batch.ErrLakeBehind) {
		t.Fatalf("lake behind the speed layer: want ErrLakeBehind, got %v", err)
	}
	if _, err := lk.Write(s, rows[5000:]); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("pay", lake.Checkpoint{Seq: 6000, Arrival: rows[5999].Arrival, CoveredUntil: rows[5999].Arrival + 1}); err != nil {
		t.Fatal(err)
	}
	rep, err := batch.Audit(ctx, lk, st, req)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Windows) != 10 || rep.Events != 6000 || rep.Seq != 6000 {
		t.Fatalf("honest speed layer: %+v", rep)
	}
	for _, w := range rep.Windows {
		if w.Groups != 3 {
			t.Fatalf("window %d: %d groups", w.Window, w.Groups)
		}
		for _, m := range w.Measures {
			if m.Kind == "count" && m.Drift != 0 {
				t.Fatalf("window %d: %s drift %v", w.Window, m.Name, m.Drift)
			}
		}
	}
	// Tamper with one cell's count in Redis.
	keys, err := rdb.Keys(ctx, ns+":v:pay_by_country:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var cell string
	for _, k := range keys {
		if !strings.Contains(k, ":h") && !strings.HasSuffix(k, ":idx") {
			cell = k
			break
		}
	}
	if err := rdb.HIncrBy(ctx, cell, "sDE\x1e0", 1).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err = batch.Audit(ctx, lk, st, req)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, w := range rep.Windows {
		if !w.OK {
			bad++
			if w.Measures[0].OK || w.Measures[0].Drift != 1 || !w.Measures[1].OK {
				t.Fatalf("tampered window: %+v", w)
			}
		}
	}
	if rep.OK || bad != 1 {
		t.Fatalf("tampered cell %s: report ok=%v, %d bad windows", cell, rep.OK, bad)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
