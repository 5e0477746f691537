package batch_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// entOrder is an order of the entity test with the arrival it was given.
type entOrder struct {
	id       string
	ts       int64
	country  string
	amount   float64
	qty      int64
	arrival  int64
	seq      uint64
	inSpeed  bool // folded by the speed store (arrived after the last cutoff), not in the lake
	hasQty   bool
	hasPrice bool
}

var entTestFeatures = []logic.FeatureDef{
	{Name: "n_1h", Measure: "count()", Over: time.Hour},
	{Name: "spend_6h", Measure: "sum(amount)", Over: 6 * time.Hour},
	{Name: "hi_qty_2d", Measure: "max(qty)", Over: 48 * time.Hour},
	{Name: "ids_6h", Measure: "count_distinct(id)", Over: 6 * time.Hour},
	{Name: "p25_2d", Measure: "quantile(amount, 0.25)", Over: 48 * time.Hour},
	{Name: "last_qty_2d", Measure: "last(qty)", Over: 48 * time.Hour},
	{Name: "first_amount_6h", Measure: "first(amount)", Over: 6 * time.Hour},
}

// entNaive computes a feature the long way over the orders of a country
// that had arrived by asOf.
func entNaive(f logic.FeatureDef, orders []entOrder, country string, asOf int64) logic.Value {
	var in []entOrder
	for _, o := range orders {
		if o.country == country && o.ts < asOf && o.ts >= asOf-f.Over.Milliseconds() && o.arrival <= asOf {
			in = append(in, o)
		}
	}
	slices.SortFunc(in, func(a, b entOrder) int {
		if a.ts != b.ts {
			return int(a.ts - b.ts)
		}
		return int(a.arrival - b.arrival)
	})
	var amounts []float64
	var qtys []int64
	ids := map[string]bool{}
	for _, o := range in {
		if o.hasPrice {
			amounts = append(amounts, o.amount)
		}
		if o.hasQty {
			qtys = append(qtys, o.qty)
		}
		ids[o.id] = true
	}
	switch f.Name {
	case "n_1h":
		return logic.Value{Kind: logic.TypeInt, I: int64(len(in))}
	case "ids_6h":
		return logic.Value{Kind: logic.TypeInt, I: int64(len(ids))}
	case "spend_6h":
		if len(amounts) == 0 {
			return logic.Value{}
		}
		s := 0.0
		for _, a := range amounts {
			s += a
		}
		return logic.Value{Kind: logic.TypeFloat, F: s}
	case "hi_qty_2d":
		if len(qtys) == 0 {
			return logic.Value{}
		}
		return logic.Value{Kind: logic.TypeInt, I: slices.Max(qtys)}
	case "p25_2d":
		if len(amounts) == 0 {
			return logic.Value{}
		}
		slices.Sort(amounts)
		r := 0.25 * float64(len(amounts)-1)
		lo, hi := math.Floor(r), math.Ceil(r)
		return logic.Value{Kind: logic.TypeFloat, F: amounts[int(lo)] + (r-lo)*(amounts[int(hi)]-amounts[int(lo)])}
	case "last_qty_2d":
		for i := len(in) - 1; i >= 0; i-- {
			if in[i].hasQty {
				return logic.Value{Kind: logic.TypeInt, I: in[i].qty}
			}
		}
		return logic.Value{}
	case "first_amount_6h":
		for _, o := range in {
			if o.hasPrice {
				return logic.Value{Kind: logic.TypeFloat, F: o.amount}
			}
		}
		return logic.Value{}
	}
	panic(f.Name)
}

func sameEntValue(a, b logic.Value) bool {
	if a.Kind == logic.TypeFloat && b.Kind == logic.TypeFloat {
		return math.Abs(a.F-b.F) <= 1e-9*math.Max(1, math.Abs(b.F))
	}
	return a == b
}

// TestEntityMaterialiseAndHistory: batch runs materialise an entity's
// keys into Redis (a full run, then incremental ones with late events),
// the speed store adds what arrived after the cutoff, and the reader
// answers every feature at random instants — from Redis (batch ⊕ speed),
// and from the lake (DuckDB) for instants older than Redis keeps — equal
// to a direct computation over the orders with their arrivals.
func TestEntityMaterialiseAndHistory(t *testing.T) {
	ctx := context.Background()
	e := newLakeEnv(t)
	s := e.cat.Streams["orders"]
	ent, err := logic.NewEntity("by_country", logic.EntityDef{Stream: "orders", Key: "country", Features: entTestFeatures}, s)
	if err != nil {
		t.Fatal(err)
	}
	e.cat.Entities = map[string]*logic.Entity{"by_country": ent}
	red := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: red.Addr})
	defer rdb.Close()
	store := speedstore.New(rdb, testenv.Namespace(t))
	// A fresh speed position with the entity joined from the start.
	if err := store.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 0}, 0, nil, ent.NewDelta()); err != nil {
		t.Fatal(err)
	}
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Entities: store}, e.lk, e.views, nil, e.cat, quietLogger(), prometheus.NewRegistry())

	rng := rand.New(rand.NewPCG(7, 8))
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	countries := []string{"US", "FR", "DE"}
	var orders []entOrder
	seq := uint64(0)
	// archive writes n orders dated within [from, to) arriving from
	// arrival on (10 ms apart) and commits a checkpoint past them.
	archive := func(n int, from, to, arrival int64) int64 {
		rows := make([]lake.Row, n)
		for i := range n {
			seq++
			o := entOrder{id: fmt.Sprintf("o%d", seq), ts: from + rng.Int64N(to-from), country: countries[rng.IntN(3)],
				amount: float64(rng.IntN(10000)) / 100, qty: int64(rng.IntN(20)), arrival: arrival + int64(i)*10, seq: seq,
				hasQty: rng.IntN(5) > 0, hasPrice: rng.IntN(5) > 0}
			raw := fmt.Sprintf(`{"id":%q,"ts":%d,"country":%q`, o.id, o.ts, o.country)
			if o.hasPrice {
				raw += fmt.Sprintf(`,"amount":%v`, o.amount)
			}
			if o.hasQty {
				raw += fmt.Sprintf(`,"qty":%d`, o.qty)
			}
			ev, _, err := s.Prepare([]byte(raw+"}"), o.arrival)
			if err != nil {
				t.Fatal(err)
			}
			rows[i] = lake.Row{Seq: seq, Arrival: o.arrival, Event: ev}
			orders = append(orders, o)
		}
		if _, err := e.lk.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		last := rows[n-1]
		if err := e.lk.Commit("orders", lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1000}); err != nil {
			t.Fatal(err)
		}
		return last.Arrival
	}
	run := func() speedstore.EntityMat {
		if _, err := r.Run(ctx, nil); err != nil {
			t.Fatal(err)
		}
		m, ok, err := store.EntityMat(ctx, ent)
		if err != nil || !ok {
			t.Fatalf("no materialisation record: %v", err)
		}
		return m
	}
	day := int64(24 * time.Hour / time.Millisecond)
	// Three days of orders arriving as they happen (in three batches),
	// then late ones: dated a day back, arriving after the first cutoff.
	archive(300, base, base+day, base+day)
	archive(300, base+day, base+2*day, base+2*day)
	m1 := run()
	archive(300, base+2*day, base+3*day, base+3*day)
	archive(150, base, base+2*day, base+3*day+3600_000) // late
	m2 := run()
	if m2.Prev != m1.Cutoff || m2.Cutoff <= m1.Cutoff {
		t.Fatalf("materialisations %+v then %+v", m1, m2)
	}
	// Orders arriving after the last cutoff go to the speed store only.
	speedFrom := m2.Cutoff + 5000
	d := ent.NewDelta()
	for i := range 200 {
		seq++
		o := entOrder{id: fmt.Sprintf("o%d", seq), ts: base + 2*day + rng.Int64N(day+3600_000), country: countries[rng.IntN(3)],
			amount: float64(rng.IntN(10000)) / 100, qty: int64(rng.IntN(20)), arrival: speedFrom + int64(i)*50, seq: seq, inSpeed: true, hasQty: true, hasPrice: rng.IntN(4) > 0}
		raw := fmt.Sprintf(`{"id":%q,"ts":%d,"country":%q,"qty":%d`, o.id, o.ts, o.country, o.qty)
		if o.hasPrice {
			raw += fmt.Sprintf(`,"amount":%v`, o.amount)
		}
		ev, _, err := s.Prepare([]byte(raw+"}"), o.arrival)
		if err != nil {
			t.Fatal(err)
		}
		d.Fold(logic.EpochOf(o.arrival, time.Second), o.arrival, 0, o.seq, 0, &ev)
		orders = append(orders, o)
	}
	if err := store.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: seq, LastArrival: orders[len(orders)-1].arrival}, 0, nil, d); err != nil {
		t.Fatal(err)
	}
	lastArrival := orders[len(orders)-1].arrival

	hist := &batch.EntityHistory{Lake: e.lk}
	defer hist.Close()
	// Redis answers while "now" is within what it keeps; the lake answers
	// with today's clock (March is far older than 2 days + 7 days).
	redisNow := time.UnixMilli(lastArrival + 60_000)
	fromRedis := &speedstore.EntityReader{Store: store, Entities: e.cat.Entities, History: hist, Now: func() time.Time { return redisNow }}
	fromLake := &speedstore.EntityReader{Store: store, Entities: e.cat.Entities, History: hist}
	checked := map[string]int{}
	for i := range 60 {
		asOf := base + rng.Int64N(redisNow.UnixMilli()-base)
		if i == 0 {
			asOf = redisNow.UnixMilli()
		}
		for _, rd := range []*speedstore.EntityReader{fromRedis, fromLake} {
			ans, err := rd.Read(ctx, "by_country", countries, asOf, true)
			if err != nil {
				t.Fatal(err)
			}
			for ci, c := range countries {
				a := ans[ci]
				checked[a.Source]++
				for fi, f := range entTestFeatures {
					want := entNaive(f, orders, c, asOf)
					if a.Source == "lake" && asOf >= speedFrom {
						continue // the speed-only orders are in no lake
					}
					if !sameEntValue(a.Values[fi], want) {
						t.Fatalf("%s as_of %s, %s: %s = %+v, want %+v", a.Source, logic.FormatTime(asOf), c, f.Name, a.Values[fi], want)
					}
					if !a.Exact[fi] && (a.Source == "redis" || asOf < m2.Cutoff) {
						t.Fatalf("%s as_of %s: %s not exact", a.Source, logic.FormatTime(asOf), f.Name)
					}
				}
			}
		}
	}
	if checked["redis"] == 0 || checked["lake"] == 0 {
		t.Fatalf("answers by source: %v", checked)
	}
	// Without as_of, every order folded so far counts.
	ans, err := fromRedis.Read(ctx, "by_country", countries, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for ci, c := range countries {
		for fi, f := range entTestFeatures {
			if want := entNaive(f, orders, c, redisNow.UnixMilli()); !sameEntValue(ans[ci].Values[fi], want) {
				t.Fatalf("now, %s: %s = %+v, want %+v", c, f.Name, ans[ci].Values[fi], want)
			}
		}
	}
}
