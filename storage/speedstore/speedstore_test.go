package speedstore_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

func testView(t *testing.T) *logic.View {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView("by_country", logic.ViewDef{Stream: "orders", Window: 60e9, GroupBy: []string{"country"}, Measures: []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "rev", Expr: "sum(amount)"}, {Name: "items", Expr: "sum(items)"},
		{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(amount)"}, {Name: "avg", Expr: "avg(amount)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type ev struct {
	epoch   int64
	t       int64
	country string
	amount  float64
	items   int64
	nulls   bool
}

func randomEvents(rng *rand.Rand, n int) []ev {
	out := make([]ev, n)
	for i := range out {
		out[i] = ev{epoch: int64(rng.IntN(5)) * 10000, t: int64(rng.IntN(10 * 60000)), country: []string{"DE", "FR", "US"}[rng.IntN(3)],
			amount: float64(rng.IntN(100000)) / 100, items: int64(rng.IntN(5)), nulls: rng.IntN(10) == 0}
	}
	return out
}

func fold(v *logic.View, evs []ev) *logic.Delta {
	d := v.NewDelta()
	for _, e := range evs {
		vals := make([]logic.Value, len(v.Stream.Fields))
		vals[v.Stream.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: e.t}
		vals[v.Stream.FieldIndex("country")] = logic.Value{Kind: logic.TypeString, S: e.country}
		if !e.nulls {
			vals[v.Stream.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: e.amount}
			vals[v.Stream.FieldIndex("items")] = logic.Value{Kind: logic.TypeInt, I: e.items}
		}
		x := logic.Event{Time: e.t, Values: vals}
		d.Fold(e.epoch, &x)
	}
	return d
}

// expected computes count/sum/min/max per epoch, window and group directly.
type exp struct {
	n, items, cnt int64
	sum, lo, hi   float64
}

func expected(evs []ev, minEpoch int64) map[[2]int64]map[string]*exp {
	out := map[[2]int64]map[string]*exp{}
	for _, e := range evs {
		if e.epoch < minEpoch {
			continue
		}
		k := [2]int64{e.epoch, e.t / 60000 * 60000}
		if out[k] == nil {
			out[k] = map[string]*exp{}
		}
		x := out[k]["s"+e.country]
		if x == nil {
			x = &exp{lo: math.Inf(1), hi: math.Inf(-1)}
			out[k]["s"+e.country] = x
		}
		x.n++
		if !e.nulls {
			x.cnt++
			x.sum += e.amount
			x.items += e.items
			x.lo = math.Min(x.lo, e.amount)
			x.hi = math.Max(x.hi, e.amount)
		}
	}
	return out
}

func check(t *testing.T, v *logic.View, cells []speedstore.Cell, want map[[2]int64]map[string]*exp) {
	t.Helper()
	n := 0
	for _, w := range want {
		n += len(w)
	}
	if len(cells) != n {
		t.Fatalf("%d cells, want %d", len(cells), n)
	}
	for _, c := range cells {
		x := want[[2]int64{c.Epoch, c.Window}][c.Group]
		if x == nil {
			t.Fatalf("unexpected cell %+v", c)
		}
		got := v.Finalize(c.State)
		if got[0] != x.n || (x.cnt > 0 && (math.Abs(got[1].(float64)-x.sum) > 1e-6 || got[2] != x.items || got[3] != x.lo || got[4] != x.hi)) || (x.cnt == 0 && got[3] != nil) {
			t.Fatalf("cell %d/%d/%q = %v, want %+v", c.Epoch, c.Window, c.Group, got, x)
		}
	}
}

func TestCommitReadConflictExpireReset(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	v := testView(t)
	rng := rand.New(rand.NewPCG(1, 2))
	a, b := randomEvents(rng, 3000), randomEvents(rng, 2000)

	if err := st.Commit(ctx, "orders", 0, speedstore.Position{Seq: 3000, Watermark: 42, Owner: "x"}, []*logic.Delta{fold(v, a)}); err != nil {
		t.Fatal(err)
	}
	// A redelivery of the same batch expects position 0: refused, nothing written.
	err := st.Commit(ctx, "orders", 0, speedstore.Position{Seq: 3000}, []*logic.Delta{fold(v, a)})
	if !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("redelivery: %v, want ErrConflict", err)
	}
	if err := st.Commit(ctx, "orders", 3000, speedstore.Position{Seq: 5000, Watermark: 43, Owner: "x"}, []*logic.Delta{fold(v, b)}); err != nil {
		t.Fatal(err)
	}
	pos, found, err := st.Position(ctx, "orders")
	if err != nil || !found || pos.Seq != 5000 || pos.Watermark != 43 || pos.Owner != "x" {
		t.Fatalf("position %+v %v %v", pos, found, err)
	}
	all := append(append([]ev{}, a...), b...)
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, v, cells, expected(all, 0))
	// Epoch and window filters.
	cells, _ = st.Read(ctx, v, 0, 1<<40, 20000)
	check(t, v, cells, expected(all, 20000))
	if err := st.Expire(ctx, v.Name, 30000); err != nil {
		t.Fatal(err)
	}
	cells, _ = st.Read(ctx, v, 0, 1<<40, 0)
	check(t, v, cells, expected(all, 30000))
	cells, _ = st.Read(ctx, v, 120000, 180000, 0)
	for _, c := range cells {
		if c.Window != 120000 {
			t.Fatalf("window filter leaked %d", c.Window)
		}
	}
	if err := st.Reset(ctx, "orders", []string{v.Name}); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := st.Position(ctx, "orders"); found {
		t.Fatal("position survived reset")
	}
	if cells, _ := st.Read(ctx, v, 0, 1<<40, 0); len(cells) != 0 {
		t.Fatalf("%d cells survived reset", len(cells))
	}
	// A writer whose state was lost (prev > 0, nothing stored) is refused.
	if err := st.Commit(ctx, "orders", 5000, speedstore.Position{Seq: 6000}, nil); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("commit after loss: %v", err)
	}
}

func TestLargeCommit(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	v := testView(t)
	d := v.NewDelta()
	for i := 0; i < 20000; i++ {
		vals := make([]logic.Value, len(v.Stream.Fields))
		vals[v.Stream.FieldIndex("country")] = logic.Value{Kind: logic.TypeString, S: string(rune('a'+i%26)) + string(rune('a'+i/26%26))}
		vals[v.Stream.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: 1.5}
		x := logic.Event{Time: int64(i/676) * 60000, Values: vals}
		d.Fold(0, &x)
	}
	if err := st.Commit(ctx, "orders", 0, speedstore.Position{Seq: 1}, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil || len(cells) != d.Len() {
		t.Fatalf("read %d cells (%v), want %d", len(cells), err, d.Len())
	}
}
