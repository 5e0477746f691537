package speedstore_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// TestRebuildJoinsTheStreamsCommits: a view new to a stream with a
// position is skipped by the stream's commits until its rebuild, folding
// the records up to the stream's position in commits of its own (racing
// the stream's), joins; from then on the stream's commits carry it. Its
// cells then hold every event exactly once, like a view folded from the
// start, and the fences refuse what would count twice.
func TestRebuildJoinsTheStreamsCommits(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	a := testView(t)
	b, err := logic.NewView("by_country_2", logic.ViewDef{Stream: "orders", Window: 60e9, GroupBy: []string{"country"},
		Measures: []logic.MeasureDef{ // a's, in another order (check reads them by name)
			{Name: "ihi", Expr: "max(items)"}, {Name: "ilo", Expr: "min(items)"}, {Name: "avg", Expr: "avg(amount)"},
			{Name: "hi", Expr: "max(amount)"}, {Name: "lo", Expr: "min(amount)"}, {Name: "items", Expr: "sum(items)"},
			{Name: "rev", Expr: "sum(amount)"}, {Name: "n", Expr: "count()"}}}, a.Stream)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	// Records 1..60, 50 events each; record r's events in recs[r-1].
	recs := make([][]ev, 60)
	for i := range recs {
		recs[i] = randomEvents(rng, 50)
	}
	events := func(from, to int) []ev { // records from..to, inclusive
		var out []ev
		for _, r := range recs[from-1 : to] {
			out = append(out, r...)
		}
		return out
	}
	if _, err := st.BeginRebuild(ctx, "orders", b.StateKey(), 0); !errors.Is(err, speedstore.ErrNoPosition) {
		t.Fatalf("rebuild without a position: %v, want ErrNoPosition", err)
	}
	// The stream starts with view a only (a fresh position: a joins).
	if err := st.Commit(ctx, "orders", 0, speedstore.Position{Seq: 10}, 0, []*logic.Delta{fold(a, events(1, 10))}); err != nil {
		t.Fatal(err)
	}
	// From now on the stream's commits carry b too, which has not joined.
	if err := st.Commit(ctx, "orders", 10, speedstore.Position{Seq: 20}, 0, []*logic.Delta{fold(a, events(11, 20)), fold(b, events(11, 20))}); err != nil {
		t.Fatal(err)
	}
	if cells, _ := st.Read(ctx, b, 0, 1<<40, 0); len(cells) != 0 {
		t.Fatalf("a view that has not joined got %d cells from the stream's commit", len(cells))
	}
	// Leftovers of an earlier rebuild attempt are cleared when one begins.
	if err := st.CommitRebuildUnfenced(ctx, fold(b, events(1, 3))); err != nil {
		t.Fatal(err)
	}
	rb, err := st.BeginRebuild(ctx, "orders", b.StateKey(), 0)
	if err != nil || rb != (speedstore.Rebuild{}) {
		t.Fatalf("begin: %+v %v", rb, err)
	}
	if cells, _ := st.Read(ctx, b, 0, 1<<40, 0); len(cells) != 0 {
		t.Fatalf("%d cells left from before the rebuild began", len(cells))
	}
	if joined, err := st.CommitRebuild(ctx, "orders", 0, 1, 12, fold(b, events(1, 12))); err != nil || joined {
		t.Fatalf("rebuild 1..12: joined %v, %v", joined, err)
	}
	// Resuming finds where it stands; a stale rebuild commit is refused.
	if rb, err := st.BeginRebuild(ctx, "orders", b.StateKey(), 99); err != nil || rb.Rebuilt != 12 || rb.From != 0 {
		t.Fatalf("resume: %+v %v", rb, err)
	}
	if _, err := st.CommitRebuild(ctx, "orders", 0, 1, 12, fold(b, events(1, 12))); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("a repeated rebuild commit: %v, want ErrConflict", err)
	}
	if _, err := st.CommitRebuild(ctx, "orders", 12, 1, 21, fold(b, events(13, 21))); !errors.Is(err, speedstore.ErrConflict) {
		t.Fatalf("a rebuild past the stream's position: %v, want ErrConflict", err)
	}
	// The stream moves on meanwhile, still without b.
	if err := st.Commit(ctx, "orders", 20, speedstore.Position{Seq: 30}, 0, []*logic.Delta{fold(a, events(21, 30)), fold(b, events(21, 30))}); err != nil {
		t.Fatal(err)
	}
	if joined, err := st.CommitRebuild(ctx, "orders", 12, 1, 20, fold(b, events(13, 20))); err != nil || joined {
		t.Fatalf("rebuild 13..20: joined %v, %v (the stream is at 30)", joined, err)
	}
	pos, _, err := st.Position(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if vp := pos.Views[b.StateKey()]; !vp.Rebuilding || vp.JoinedOK || vp.Rebuilt != 20 || vp.RebuildFirst != 1 {
		t.Fatalf("b while rebuilding: %+v", vp)
	}
	if vp := pos.Views[a.StateKey()]; !vp.JoinedOK || vp.Joined != 30 || vp.Rebuilding {
		t.Fatalf("a: %+v", vp)
	}
	if joined, err := st.CommitRebuild(ctx, "orders", 20, 1, 30, fold(b, events(21, 30))); err != nil || !joined {
		t.Fatalf("rebuild 21..30: joined %v, %v (want joined)", joined, err)
	}
	if _, err := st.BeginRebuild(ctx, "orders", b.StateKey(), 0); !errors.Is(err, speedstore.ErrJoined) {
		t.Fatalf("begin after the join: %v, want ErrJoined", err)
	}
	// Joined: the stream's commits carry b.
	for _, r := range [][2]int{{31, 45}, {46, 60}} {
		if err := st.Commit(ctx, "orders", uint64(r[0]-1), speedstore.Position{Seq: uint64(r[1])}, 0, []*logic.Delta{fold(a, events(r[0], r[1])), fold(b, events(r[0], r[1]))}); err != nil {
			t.Fatal(err)
		}
	}
	pos, _, _ = st.Position(ctx, "orders")
	if vp := pos.Views[b.StateKey()]; !vp.JoinedOK || vp.Joined != 60 || vp.Rebuilding || vp.From != 0 {
		t.Fatalf("b after joining: %+v", vp)
	}
	for _, v := range []*logic.View{a, b} {
		cells, err := st.Read(ctx, v, 0, 1<<40, 0)
		if err != nil {
			t.Fatal(err)
		}
		check(t, a, cells, expected(events(1, 60), 0)) // the same state layout: a reads b's cells by meaning
	}
	// Clean-up: the keys are listed, and a dropped one is gone, cells and position.
	keys, err := st.StateKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if want := []string{a.StateKey(), b.StateKey()}; !slices.Equal(keys, want) {
		t.Fatalf("state keys %v, want %v", keys, want)
	}
	if err := st.DropState(ctx, "orders", b.StateKey()); err != nil {
		t.Fatal(err)
	}
	if cells, _ := st.Read(ctx, b, 0, 1<<40, 0); len(cells) != 0 {
		t.Fatalf("%d cells after drop", len(cells))
	}
	pos, _, _ = st.Position(ctx, "orders")
	if _, ok := pos.Views[b.StateKey()]; ok || pos.Seq != 60 {
		t.Fatalf("position after drop: %+v", pos)
	}
}
