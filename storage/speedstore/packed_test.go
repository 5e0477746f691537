package speedstore_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// specials are slot values the packed encoding and the script's merge must
// carry bit for bit.
var specials = []float64{0, math.Copysign(0, -1), 1, -1, 0.1, -2.5, math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64,
	math.MaxFloat64, -math.MaxFloat64, 1 << 53, 1<<53 + 2, -(1 << 62), 1e-300, 123456789.123456789, math.Inf(1), math.Inf(-1)}

func randomSlot(rng *rand.Rand, sl logic.Slot) float64 {
	switch {
	case sl.Op != logic.OpAdd && rng.IntN(4) == 0:
		return math.NaN() // an empty min/max
	case rng.IntN(3) == 0:
		return specials[rng.IntN(len(specials))]
	case rng.IntN(2) == 0:
		return float64(rng.Int64N(1<<40) - 1<<39) // an integer count or sum
	}
	return (rng.Float64() - 0.5) * math.Pow(10, float64(rng.IntN(40)-20))
}

// sameSlot compares a merged slot: NaN equals NaN, min/max bit for bit,
// additions by value (-0 + 0 is 0 on both sides).
func sameSlot(sl logic.Slot, got, want float64) bool {
	if math.IsNaN(want) || math.IsNaN(got) {
		return math.IsNaN(want) && math.IsNaN(got)
	}
	if sl.Op != logic.OpAdd {
		return math.Float64bits(got) == math.Float64bits(want)
	}
	return got == want
}

// TestPackedSlotsMergeLikeLogic is the conformance test of the packed
// layout: several commits into the same cells, with special values (NaN =
// empty min/max, ±0, ±Inf, subnormals, 2^53 and beyond, the largest
// floats; in random cells and in fixed pairs, e.g. +0 then -0), read back
// equal to logic.MergeState over the same deltas in the
// same order — min/max bit for bit, sums exactly (the script adds in
// float64, in commit order, as MergeState does).
func TestPackedSlotsMergeLikeLogic(t *testing.T) {
	ctx := context.Background()
	st := speedstore.New(testenv.StartRedis(t).Client(t), testenv.Namespace(t))
	v := storagetest.SpeedView(t)
	slots := v.Slots()
	rng := rand.New(rand.NewPCG(21, 22))
	want := map[logic.CellKey]*logic.State{}
	// Edge cells: every slot of cell i takes edges[i][0], then edges[i][1].
	nan, inf, negZero := math.NaN(), math.Inf(1), math.Copysign(0, -1)
	edges := [][2]float64{{0, negZero}, {negZero, 0}, {nan, 5}, {5, nan}, {nan, nan}, {inf, -inf}, {-inf, inf},
		{math.MaxFloat64, math.MaxFloat64}, {1 << 53, 1}, {0.1, 0.2}, {math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64}, {-7, -7}}
	for commit := 0; commit < 6; commit++ {
		d := v.NewDelta()
		for i, e := range edges {
			if commit >= 2 {
				break
			}
			k := logic.CellKey{Epoch: 90000, Group: fmt.Sprint("edge", i)}
			c := &logic.DeltaCell{Num: make([]float64, v.NumSlots)}
			for j := range slots {
				c.Num[j] = e[commit]
			}
			d.Cells[k] = c
			if want[k] == nil {
				s := v.NewState()
				want[k] = &s
			}
			v.MergeState(want[k], c.State(v))
		}
		for i := 0; i < 300; i++ {
			k := logic.CellKey{Epoch: int64(rng.IntN(2)) * 10000, Window: int64(rng.IntN(4)) * 60000, Group: fmt.Sprint("s", rng.IntN(30))}
			if d.Cells[k] != nil {
				continue
			}
			c := &logic.DeltaCell{Num: make([]float64, v.NumSlots)}
			for j, sl := range slots {
				c.Num[j] = randomSlot(rng, sl)
			}
			d.Cells[k] = c
			if want[k] == nil {
				s := v.NewState()
				want[k] = &s
			}
			v.MergeState(want[k], c.State(v))
		}
		if err := st.Commit(ctx, "orders", 0, uint64(commit), speedstore.Position{Seq: uint64(commit + 1)}, 0, []*logic.Delta{d}); err != nil {
			t.Fatal(err)
		}
	}
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != len(want) {
		t.Fatalf("%d cells, want %d", len(cells), len(want))
	}
	for _, c := range cells {
		w := want[logic.CellKey{Epoch: c.Epoch, Window: c.Window, Group: c.Group}]
		if w == nil {
			t.Fatalf("unexpected cell %d/%d/%q", c.Epoch, c.Window, c.Group)
		}
		for j, sl := range slots {
			if !sameSlot(sl, c.State.Num[j], w.Num[j]) {
				t.Fatalf("cell %d/%d/%q slot %d: got %v (%#x), want %v (%#x)", c.Epoch, c.Window, c.Group, j,
					c.State.Num[j], math.Float64bits(c.State.Num[j]), w.Num[j], math.Float64bits(w.Num[j]))
			}
		}
	}
}

// TestPackedValueOfAnotherDefinition: a packed value whose length is not
// the view's (written under another definition of the view) is ignored by
// Read and replaced by the next commit, never merged slot by slot.
func TestPackedValueOfAnotherDefinition(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(rdb, ns)
	v := storagetest.SpeedView(t)
	key := ns + ":v:" + speedstore.Tag(v.Stream.Name, 0) + ":" + v.StateKey() + ":0:0"
	if err := rdb.HSet(ctx, key, "sDE\x1es", string(make([]byte, 16))).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, ns+":v:"+speedstore.Tag(v.Stream.Name, 0)+":"+v.StateKey()+":idx", redis.Z{Score: 0, Member: "0:0"}).Err(); err != nil {
		t.Fatal(err)
	}
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil || len(cells) != 1 || v.Finalize(&cells[0].State)[0] != int64(0) {
		t.Fatalf("read %+v %v", cells, err)
	}
	d := storagetest.FoldSpeed(v, []storagetest.SpeedEvent{{Country: "DE", Amount: 2, Items: 1}})
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	cells, err = st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil || len(cells) != 1 {
		t.Fatalf("read %+v %v", cells, err)
	}
	if got := v.Finalize(&cells[0].State); got[0] != int64(1) || got[1] != 2.0 || got[3] != 2.0 {
		t.Fatalf("after commit: %v", got)
	}
}

// TestCommitChunks: one commit whose arguments exceed what one redis.call
// may take — a hash with more groups than a block holds, a view with more
// hashes than one ZADD takes, a cell with more distinct elements than one
// PFADD takes — is split inside the script and reads back whole.
func TestCommitChunks(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	ns := testenv.Namespace(t)
	st := speedstore.New(rdb, ns)
	v := storagetest.SpeedView(t)
	var evs []storagetest.SpeedEvent
	for i := 0; i < 2500; i++ { // 2500 groups in one hash
		evs = append(evs, storagetest.SpeedEvent{Epoch: 10000, Time: 0, Country: fmt.Sprint("g", i), Amount: float64(i), Items: int64(i)})
	}
	for i := 0; i < 4500; i++ { // 4500 hashes
		evs = append(evs, storagetest.SpeedEvent{Epoch: 20000, Time: int64(i) * 60000, Country: "DE", Amount: 1, Items: 1})
	}
	d := storagetest.FoldSpeed(v, evs)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{d}); err != nil {
		t.Fatal(err)
	}
	cells, err := st.Read(ctx, v, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckSpeedCells(t, v, cells, storagetest.ExpectedSpeedCells(evs, 0, 0, 1<<40))

	s, err := logic.NewStream("users", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "user": logic.TypeString}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	dv, err := logic.NewView("users", logic.ViewDef{Stream: "users", Window: 60e9, Measures: []logic.MeasureDef{
		{Name: "users", Expr: "count_distinct(user)"}, {Name: "n", Expr: "count()"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	dd := dv.NewDelta()
	var want logic.HLL
	for i := 0; i < 2500; i++ {
		u := fmt.Sprint("user-", i)
		vals := make([]logic.Value, len(s.Fields))
		vals[s.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: 0}
		vals[s.FieldIndex("user")] = logic.Value{Kind: logic.TypeString, S: u}
		e := logic.Event{Time: 0, Values: vals}
		dd.Fold(0, &e)
		want.Add([]byte(u))
	}
	if err := st.Commit(ctx, "users", 0, 0, speedstore.Position{Seq: 1}, 0, []*logic.Delta{dd}); err != nil {
		t.Fatal(err)
	}
	cells, err = st.Read(ctx, dv, 0, 1<<40, 0)
	if err != nil || len(cells) != 1 {
		t.Fatalf("read %d cells, %v", len(cells), err)
	}
	if h := cells[0].State.HLL[0]; h == nil || !h.Equal(&want) || dv.Finalize(&cells[0].State)[1] != int64(2500) {
		t.Fatalf("distinct sketch or count differs: %v", dv.Finalize(&cells[0].State))
	}
}
