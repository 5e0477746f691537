package query

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
)

// BenchmarkEncodeAnswer: the JSON of a 24 h × 1 min × 50 groups answer
// (72,000 rows, 5 measures).
func BenchmarkEncodeAnswer(b *testing.B) {
	a := bigAnswer(b)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(encodeAnswer(a))
	}
	b.SetBytes(int64(n))
}

// TestEncodeAnswerIsJSON: the hand-written encoder produces JSON that
// encoding/json reads back to the same rows.
func TestEncodeAnswerIsJSON(t *testing.T) {
	a := bigAnswer(t)
	a.Rows = a.Rows[:500]
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(encodeAnswer(a), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Rows) != 500 {
		t.Fatalf("%d rows", len(got.Rows))
	}
	for i, r := range got.Rows {
		w := a.Rows[i]
		if r["window_start"] != logic.FormatTime(w.Window) || r["country"] != w.Dims[0].S || r["n"] != float64(w.Values[0].(int64)) ||
			r["rev"] != w.Values[1].(float64) || r["lo"] != nil || r["source"] != w.Source || r["exact"] != w.Exact || r["final"] != w.Final {
			t.Fatalf("row %d: %v, want %+v", i, r, w)
		}
	}
}

func bigAnswer(tb testing.TB) *answer {
	s, err := logic.NewStream("o", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := logic.NewView("v", logic.ViewDef{Stream: "o", Window: time.Minute, GroupBy: []string{"country"}, Measures: []logic.MeasureDef{
		{Name: "n", Expr: "count()"}, {Name: "rev", Expr: "sum(amount)"}, {Name: "avg", Expr: "avg(amount)"}, {Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(amount)"}}}, s)
	if err != nil {
		tb.Fatal(err)
	}
	a := &answer{View: v, Query: Query{GroupBy: []string{"country"}, StepText: "1m"}}
	base := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC).UnixMilli()
	srcs := []string{SourceBatch, SourceSpeed, SourceBoth}
	for w := 0; w < 1440; w++ {
		for g := 0; g < 50; g++ {
			a.Rows = append(a.Rows, ResultRow{Window: base + int64(w)*60000, Dims: []logic.Value{{Kind: logic.TypeString, S: fmt.Sprint("c<", g)}},
				Values: []any{int64(w + g), float64(w*g) * 1.25, 3.5, nil, 99.75}, Source: srcs[(w+g)%3], Exact: g%2 == 0, Final: w%3 == 0})
		}
	}
	return a
}

// BenchmarkMergeApply: merging 72,000 batch rows with 3,000 speed cells
// (a 24 h × 1 min × 50 groups answer) and finalizing it without a rollup.
func BenchmarkMergeApply(b *testing.B) {
	a := bigAnswer(b)
	v := a.View
	var batch []batchviews.Row
	var speed []SpeedCell
	for _, r := range a.Rows {
		st := v.NewState()
		st.Num[0], st.Num[1], st.Num[2] = 3, 10.5, 3
		g := v.GroupKey(r.Dims)
		batch = append(batch, batchviews.Row{Window: r.Window, Group: g, State: st})
		if r.Window >= a.Rows[len(a.Rows)-1].Window-30*60000 && len(speed) < 3000 {
			speed = append(speed, SpeedCell{Epoch: 2e12, Window: r.Window, Group: g, State: st})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		m, err := Merge(v, 1e12, batch, speed, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Apply(v, m, Rollup{}, 0); err != nil {
			b.Fatal(err)
		}
	}
}
