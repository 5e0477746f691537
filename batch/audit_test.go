package batch_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
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
	"github.com/braid-data/braid/storage/eventlog"
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
	// The log packs events in records: 4 a record here, so the lake rows
	// of event i are at (_seq, _idx) = (i/4+1, i%4).
	const perRecord = 4
	at := func(i int) uint64 { return uint64(i/perRecord + 1) }
	// A second speed layer skipped one event as too late.
	const lateEvent = 4321
	lateRef := eventlog.EventRef{Seq: at(lateEvent), Index: lateEvent % perRecord}
	var rows []lake.Row
	d, dLate := v.NewDelta(), v.NewDelta()
	for i := 0; i < 6000; i++ {
		arr := base + 600_000 + int64(i)*3
		raw := `{"ts":` + itoa(base+r.Int64N(600_000)) + `,"user":"u` + itoa(int64(r.IntN(3000))) + `","country":"` +
			[]string{"DE", "FR", "US"}[r.IntN(3)] + `","amount":` + itoa(int64(r.IntN(100000))) + `.25}`
		ev, _, err := s.Prepare([]byte(raw), arr)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, lake.Row{Seq: at(i), Index: i % perRecord, Arrival: arr, Event: ev})
		d.Fold(logic.EpochOf(arr, time.Second), &ev)
		if i != lateEvent {
			dLate.Fold(logic.EpochOf(arr, time.Second), &ev)
		}
	}
	lk, err := lake.OpenDir(filepath.Join(t.TempDir(), "lake"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lk.Write(s, rows[:5000]); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("pay", lake.Checkpoint{Seq: at(4999), Arrival: rows[4999].Arrival, CoveredUntil: rows[4999].Arrival + 1}); err != nil {
		t.Fatal(err)
	}
	rdb := testenv.StartRedis(t).Client(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(rdb, ns)
	if err := st.Commit(ctx, "pay", 0, 0, speedstore.Position{Seq: at(5999)}, 0, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	req := batch.AuditRequest{View: v, From: math.MinInt64, To: math.MaxInt64}
	if _, err := batch.Audit(ctx, lk, speedSnapshot{st}, req); !errors.Is(err, batch.ErrLakeBehind) {
		t.Fatalf("lake behind the speed layer: want ErrLakeBehind, got %v", err)
	}
	if _, err := lk.Write(s, rows[5000:]); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("pay", lake.Checkpoint{Seq: at(5999), Arrival: rows[5999].Arrival, CoveredUntil: rows[5999].Arrival + 1}); err != nil {
		t.Fatal(err)
	}
	rep, err := batch.Audit(ctx, lk, speedSnapshot{st}, req)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Windows) != 10 || rep.Events != 6000 || rep.Seq != at(5999) || rep.Late != 0 {
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
	// The speed layer that skipped an event as too late agrees with the lake
	// once that event's place (record, index) is left out, and only then:
	// not without it, nor with another event of the same record.
	stLate := speedstore.New(rdb, ns+"-late")
	if err := stLate.Commit(ctx, "pay", 0, 0, speedstore.Position{Seq: at(5999)}, 0, []*logic.Delta{dLate}); err != nil {
		t.Fatal(err)
	}
	lateReq := req
	lateReq.Late = []eventlog.EventRef{lateRef}
	if rep, err := batch.Audit(ctx, lk, speedSnapshot{stLate}, lateReq); err != nil || !rep.OK || rep.Events != 5999 || rep.Late != 1 {
		t.Fatalf("late event %+v left out: %+v %v", lateRef, rep, err)
	}
	for _, late := range [][]eventlog.EventRef{nil, {{Seq: lateRef.Seq, Index: (lateRef.Index + 1) % perRecord}}} {
		lateReq.Late = late
		if rep, err := batch.Audit(ctx, lk, speedSnapshot{stLate}, lateReq); err != nil || rep.OK || rep.Events != 6000-int64(len(late)) {
			t.Fatalf("late %+v instead of %+v: %+v %v; want drift", late, lateRef, rep, err)
		}
	}

	// Tamper with one cell's count in Redis.
	keys, err := rdb.Keys(ctx, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":*").Result()
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
	// The group's slots are packed, 8 bytes each: add one to the count's.
	packed, err := rdb.HGet(ctx, cell, "sDE\x1es").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	off := 8 * v.Measures[0].Off // measure 0 is count()
	n := math.Float64frombits(binary.LittleEndian.Uint64(packed[off:]))
	binary.LittleEndian.PutUint64(packed[off:], math.Float64bits(n+1))
	if err := rdb.HSet(ctx, cell, "sDE\x1es", packed).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err = batch.Audit(ctx, lk, speedSnapshot{st}, req)
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

// TestAuditQuantileIsQuantileCont: the audit checks a quantile against the
// exact quantile_cont, interpolated between the values of two ranks, within
// α·max(|v_lo|, |v_hi|). Small groups of both signs pass with an honest
// speed layer; a sketch whose answer is the value of the lower rank (1.25,
// 10.5, 20 made 1.25, 10.5, 10.5: p99 10.5 where quantile_cont says 19.81)
// is beyond the bound, while its count and sum still agree.
func TestAuditQuantileIsQuantileCont(t *testing.T) {
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
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	groups := map[string][]float64{"DE": {1.25, 10.5, 20}, "FR": {-3.5, 7.25}, "US": {-42.5}, "NL": {-8, -0.5, -3, -1.75}}
	var rows []lake.Row
	d := v.NewDelta()
	for _, c := range []string{"DE", "FR", "US", "NL"} {
		for _, x := range groups[c] {
			arr := base + 600_000 + int64(len(rows))*3
			raw := `{"ts":` + itoa(base+int64(len(rows))*1000) + `,"user":"u` + itoa(int64(len(rows))) + `","country":"` + c + `","amount":` + strconv.FormatFloat(x, 'g', -1, 64) + `}`
			ev, _, err := s.Prepare([]byte(raw), arr)
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, lake.Row{Seq: uint64(len(rows) + 1), Arrival: arr, Event: ev})
			d.Fold(logic.EpochOf(arr, time.Second), &ev)
		}
	}
	lk, err := lake.OpenDir(filepath.Join(t.TempDir(), "lake"))
	if err != nil {
		t.Fatal(err)
	}
	last := rows[len(rows)-1]
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("pay", lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}); err != nil {
		t.Fatal(err)
	}
	rdb := testenv.StartRedis(t).Client(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(rdb, ns)
	if err := st.Commit(ctx, "pay", 0, 0, speedstore.Position{Seq: last.Seq}, 0, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	req := batch.AuditRequest{View: v, From: math.MinInt64, To: math.MaxInt64}
	rep, err := batch.Audit(ctx, lk, speedSnapshot{st}, req)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Windows) != 1 || rep.Windows[0].Groups != 4 {
		t.Fatalf("honest speed layer: %+v", rep)
	}
	for _, m := range rep.Windows[0].Measures {
		if m.Kind == "quantile" && (m.Drift > logic.QuantileAlpha || m.Bound < logic.QuantileAlpha || m.Bound > 1.0001*logic.QuantileAlpha) {
			t.Fatalf("%s: drift %v, bound %v; want both about α", m.Name, m.Drift, m.Bound)
		}
	}

	// DE's sketch says 1.25, 10.5, 10.5: one count moved from 20's bucket
	// to 10.5's.
	keys, err := rdb.Keys(ctx, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	moved := false
	for _, k := range keys {
		from := "sDE\x1eq0:" + strconv.Itoa(int(logic.QuantileBucket(20)))
		if n, err := rdb.HGet(ctx, k, from).Int(); err != nil || n != 1 {
			continue
		}
		if err := rdb.HIncrBy(ctx, k, from, -1).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.HIncrBy(ctx, k, "sDE\x1eq0:"+strconv.Itoa(int(logic.QuantileBucket(10.5))), 1).Err(); err != nil {
			t.Fatal(err)
		}
		moved = true
		break
	}
	if !moved {
		t.Fatalf("no cell holds DE's bucket of 20 (keys %v)", keys)
	}
	rep, err = batch.Audit(ctx, lk, speedSnapshot{st}, req)
	if err != nil {
		t.Fatal(err)
	}
	// p99 of DE: quantile_cont 10.5 + 0.98·9.5 = 19.81; the sketch about
	// 10.5: drift about 9.31/20 relative to the larger of the two values.
	w := rep.Windows[0]
	for _, m := range w.Measures {
		switch m.Name {
		case "p99":
			if m.OK || math.Abs(m.Drift-(19.81-10.5)/20) > 0.01 {
				t.Fatalf("p99 of a sketch answering the lower rank: %+v", m)
			}
		case "n", "revenue":
			if !m.OK || m.Drift != 0 {
				t.Fatalf("%s: %+v", m.Name, m)
			}
		}
	}
	if rep.OK || w.OK {
		t.Fatalf("a sketch answering the lower rank passed the audit: %+v", rep)
	}
}

// TestAuditJSON: an audit report gives its times in RFC 3339 (UTC) like
// query answers, the cutoff null when there is none, and a drift that is
// no finite number (one side null) as null.
func TestAuditJSON(t *testing.T) {
	cut := time.Date(2026, 11, 29, 1, 27, 10, 0, time.UTC)
	w := time.Date(2026, 11, 29, 1, 28, 0, 0, time.UTC)
	rep := batch.AuditReport{View: "v", Cutoff: cut.UnixMilli(), Seq: 7, Events: 3, Windows: []batch.AuditWindow{{
		Window: w.UnixMilli(), Groups: 2, Missing: []string{"speed only: FR"},
		Measures: []batch.AuditMeasure{{Name: "n", Kind: "count", Drift: 1, Bound: 0}, {Name: "hi", Kind: "max", Drift: math.Inf(1)}},
	}}}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	win := got["windows"].([]any)[0].(map[string]any)
	ms := win["measures"].([]any)
	if got["cutoff"] != "2026-11-29T01:27:10Z" || got["seq"] != 7.0 || got["events"] != 3.0 || got["ok"] != false ||
		win["window_start"] != "2026-11-29T01:28:00Z" || win["groups"] != 2.0 || len(win["missing"].([]any)) != 1 ||
		ms[0].(map[string]any)["drift"] != 1.0 || ms[1].(map[string]any)["drift"] != nil || ms[1].(map[string]any)["name"] != "hi" {
		t.Fatalf("report as JSON: %s", b)
	}
	rep.Cutoff = 0
	if b, err := json.Marshal(rep); err != nil || !strings.Contains(string(b), `"cutoff":null`) {
		t.Fatalf("no cutoff: %s %v", b, err)
	}
}
