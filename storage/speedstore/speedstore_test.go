package speedstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// TestExpireDeletesKeysAndIndex: Expire removes exactly the cell hashes
// of epochs before the cutoff from Redis itself, and their index members
// (the contract as readers see it is in storagetest's suite).
func TestExpireDeletesKeysAndIndex(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(r.Client(t), ns)
	v := storagetest.SpeedView(t)
	all := storagetest.RandomSpeedEvents(rand.New(rand.NewPCG(1, 2)), 5000)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 5000}, 0, []*logic.Delta{storagetest.FoldSpeed(v, all)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Expire(ctx, v.Stream, v.StateKey(), 30000); err != nil {
		t.Fatal(err)
	}
	cells, _ := st.Read(ctx, v, 0, 1<<40, 0)
	storagetest.CheckSpeedCells(t, v, cells, storagetest.ExpectedSpeedCells(all, 30000, 0, 1<<40))
	keys, err := r.Client(t).Keys(ctx, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	hashes := 0
	for _, k := range keys {
		if strings.HasSuffix(k, ":idx") {
			continue
		}
		hashes++
		var e, w int64
		if _, err := fmt.Sscanf(strings.TrimPrefix(k, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":"), "%d:%d", &e, &w); err != nil || e < 30000 {
			t.Fatalf("key %s survived Expire(30000) (%v)", k, err)
		}
	}
	if want := len(storagetest.ExpectedSpeedCells(all, 30000, 0, 1<<40)); hashes != want {
		t.Fatalf("%d cell hashes after expire, want %d", hashes, want)
	}
	if n, _ := r.Client(t).ZCard(ctx, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":idx").Result(); n != int64(hashes) {
		t.Fatalf("index has %d members, %d hashes", n, hashes)
	}
}

func TestLargeCommit(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	v := storagetest.SpeedView(t)
	var evs []storagetest.SpeedEvent
	for i := 0; i < 20000; i++ {
		// 20000 distinct cells (676 groups x 30 windows), each with 9 ops:
		// about 180k cell ops and 540k script arguments in one call.
		evs = append(evs, storagetest.SpeedEvent{Epoch: 10000, Time: int64(i/676) * 60000, Country: string(rune('a'+i%26)) + string(rune('a'+i/26%26)),
			Amount: float64(i) + 0.25, Items: int64(i % 7)})
	}
	d := storagetest.FoldSpeed(v, evs)
	if d.Len() != 20000 {
		t.Fatalf("fixture has %d cells, want 20000", d.Len())
	}
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 20000}, 0, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckSpeedCells(t, v, cells, storagetest.ExpectedSpeedCells(evs, 0, 0, 1<<40))
	if pos, _, _ := st.Position(ctx, "orders", 0); pos.Seq != 20000 {
		t.Fatalf("position %d after the large commit", pos.Seq)
	}
}

// TestSketchesRoundTrip commits count_distinct and quantile deltas over
// several commits and checks that Read returns, per cell, exactly the
// HyperLogLog of the union of the elements (PFADD by Redis, registers
// compared with logic's own) and the summed bucket counts; Expire removes
// the HyperLogLog keys with their cells.
func TestSketchesRoundTrip(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(rdb, ns)
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat, "user": logic.TypeString, "items": logic.TypeInt}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView("sk", logic.ViewDef{Stream: "orders", Window: 60e9, GroupBy: []string{"country"}, Measures: []logic.MeasureDef{
		{Name: "users", Expr: "count_distinct(user)"}, {Name: "kinds", Expr: "count_distinct(items)"},
		{Name: "p50", Expr: "quantile(amount, 0.5)"}, {Name: "p99", Expr: "quantile(amount, 0.99)"}, {Name: "n", Expr: "count()"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	type key struct {
		w int64
		g string
	}
	wantU := map[key]*logic.HLL{}
	wantQ := map[key]logic.QuantileSketch{}
	seq := uint64(0)
	for commit := 0; commit < 4; commit++ {
		d := v.NewDelta()
		for i := 0; i < 3000; i++ {
			ts := int64(rng.IntN(5 * 60000))
			vals := make([]logic.Value, len(s.Fields))
			vals[s.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: ts}
			c := []string{"DE", "FR", "US"}[rng.IntN(3)]
			vals[s.FieldIndex("country")] = logic.Value{Kind: logic.TypeString, S: c}
			u := fmt.Sprint("user-", rng.IntN(2000))
			vals[s.FieldIndex("user")] = logic.Value{Kind: logic.TypeString, S: u}
			vals[s.FieldIndex("items")] = logic.Value{Kind: logic.TypeInt, I: int64(rng.IntN(7))}
			amt := rng.ExpFloat64() * 100
			if rng.IntN(10) > 0 {
				vals[s.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: amt}
			}
			ev := logic.Event{Time: ts, Values: vals}
			d.Fold(0, &ev)
			k := key{ts / 60000 * 60000, v.GroupKey([]logic.Value{{Kind: logic.TypeString, S: c}})}
			if wantU[k] == nil {
				wantU[k] = new(logic.HLL)
				wantQ[k] = logic.QuantileSketch{}
			}
			wantU[k].Add([]byte(u))
			if !vals[s.FieldIndex("amount")].Null() {
				wantQ[k].Add(amt)
			}
		}
		if err := st.Commit(ctx, "orders", 0, seq, speedstore.Position{Seq: seq + 3000}, 0, []*logic.Delta{d}); err != nil {
			t.Fatal(err)
		}
		seq += 3000
	}
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != len(wantU) {
		t.Fatalf("%d cells, want %d", len(cells), len(wantU))
	}
	for _, c := range cells {
		k := key{c.Window, c.Group}
		users, kinds := v.Measures[0].Sketch, v.Measures[1].Sketch
		if h := c.State.HLL[users]; h == nil || !h.Equal(wantU[k]) {
			t.Fatalf("cell %v: distinct users sketch differs from the union's", k)
		}
		if c.State.HLL[kinds] == nil || c.State.HLL[kinds].Count() != 7 {
			t.Fatalf("cell %v: distinct items %v, want 7", k, c.State.HLL[kinds])
		}
		got, want := c.State.Q[0], wantQ[k]
		if len(got) != len(want) {
			t.Fatalf("cell %v: %d buckets, want %d", k, len(got), len(want))
		}
		for b, n := range want {
			if got[b] != n {
				t.Fatalf("cell %v: bucket %d = %v, want %v", k, b, got[b], n)
			}
		}
		vals := v.Finalize(&c.State)
		if vals[2] != want.Quantile(0.5) || vals[3] != want.Quantile(0.99) || vals[0] != wantU[k].Count() {
			t.Fatalf("cell %v: answers %v", k, vals)
		}
	}
	keys, _ := rdb.Keys(ctx, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":*:h*").Result()
	if len(keys) != 2*len(wantU) {
		t.Fatalf("%d HyperLogLog keys, want %d", len(keys), 2*len(wantU))
	}
	if err := st.Expire(ctx, v.Stream, v.StateKey(), 1); err != nil {
		t.Fatal(err)
	}
	if keys, _ := rdb.Keys(ctx, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":*").Result(); len(keys) != 0 {
		t.Fatalf("keys left after Expire: %v", keys)
	}
}

// benchView is the bench's view shape: 5 measures (count, sum, avg, min,
// max) per country, over 1-minute windows.
func benchView(b *testing.B, window time.Duration) *logic.View {
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt}}, []byte("k"))
	if err != nil {
		b.Fatal(err)
	}
	v, err := logic.NewView("bench", logic.ViewDef{Stream: "orders", Window: window, GroupBy: []string{"country"}, Measures: []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "rev", Expr: "sum(amount)"}, {Name: "avg", Expr: "avg(amount)"},
		{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(items)"}}}, s)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// BenchmarkCommit commits micro-batches of 2000 events (one view, 1-minute
// windows, 50 groups) with event times spread over 24 h (nearly every event
// its own cell), into new cells (an epoch of their own) or into cells that
// exist (the same epoch), and with event times in the last 5 minutes (a few
// hundred cells, merged into existing ones).
func BenchmarkCommit(b *testing.B) {
	for _, c := range []struct {
		name     string
		span     int64
		newCells bool
	}{{"spread24h_new", 24 * 3600_000, true}, {"spread24h_merge", 24 * 3600_000, false}, {"live5m_merge", 5 * 60_000, false}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			rdb := testenv.StartRedis(b).Client(b)
			st := speedstore.New(rdb, testenv.Namespace(b))
			v := benchView(b, time.Minute)
			rng := rand.New(rand.NewPCG(5, 6))
			const k = 8
			var evs [k][]storagetest.SpeedEvent
			cells := 0
			for i := range evs {
				evs[i] = make([]storagetest.SpeedEvent, 2000)
				for j := range evs[i] {
					evs[i][j] = storagetest.SpeedEvent{Time: rng.Int64N(c.span), Country: fmt.Sprint("c", rng.IntN(50)),
						Amount: float64(rng.IntN(100000)) / 100, Items: int64(rng.IntN(9))}
				}
				cells += storagetest.FoldSpeed(v, evs[i]).Len()
			}
			deltas := make([]*logic.Delta, b.N)
			for i := range deltas {
				if c.newCells {
					for j := range evs[i%k] {
						evs[i%k][j].Epoch = int64(i) * 10000
					}
				}
				deltas[i] = storagetest.FoldSpeed(v, evs[i%k])
			}
			_ = rdb.ConfigResetStat(ctx)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := st.Commit(ctx, "orders", 0, uint64(i), speedstore.Position{Seq: uint64(i + 1)}, 0, deltas[i:i+1]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// The script's own time in Redis (the rest is the client, the
			// protocol and the loopback).
			info, _ := rdb.Info(ctx, "commandstats").Result()
			var total int64
			for _, l := range strings.Split(info, "\n") {
				if strings.HasPrefix(l, "cmdstat_evalsha:") || strings.HasPrefix(l, "cmdstat_eval:") {
					var calls, usec int64
					if _, err := fmt.Sscanf(l[strings.IndexByte(l, ':')+1:], "calls=%d,usec=%d", &calls, &usec); err == nil {
						total += usec
					}
				}
			}
			b.ReportMetric(float64(total)/float64(b.N), "redis-µs/op")
			b.ReportMetric(float64(cells)/k, "cells/op")
			b.ReportMetric(float64(b.N)*2000/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// finalByGroup reads every cell of v and finalizes it, by group (a group
// in one cell only).
func finalByGroup(ctx context.Context, t *testing.T, st *speedstore.Store, v *logic.View) map[string][]any {
	t.Helper()
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]any{}
	for _, c := range cells {
		got[c.Group] = v.Finalize(&c.State)
	}
	return got
}
