package query

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/braid-data/braid/logic"
)

// TestPickAnswersTyped: last and first answer their field's type in every
// format — JSON strings, numbers, booleans and RFC 3339 times; CSV text;
// Arrow columns typed like the field (a time a timestamp[ms, UTC]) — and
// null where no event had a value; merged across epochs and rolled up.
func TestPickAnswersTyped(t *testing.T) {
	s, err := logic.NewStream("s", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "g": logic.TypeString, "name": logic.TypeString, "x": logic.TypeFloat, "n": logic.TypeInt, "ok": logic.TypeBool}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView("v", logic.ViewDef{Window: time.Minute, GroupBy: []string{"g"}, Measures: []logic.MeasureDef{
		{Name: "last_name", Expr: "last(name)"}, {Name: "first_x", Expr: "first(x)"}, {Name: "last_n", Expr: "last(n)"},
		{Name: "first_ok", Expr: "first(ok)"}, {Name: "last_ts", Expr: "last(ts)"}, {Name: "last_ok", Expr: "last(ok)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC).UnixMilli()
	raw := []string{ // in log order: event i at sequence i+1
		`{"ts":` + strconv.FormatInt(base+1000, 10) + `,"g":"a","name":"late","x":1.5,"n":7,"ok":true}`,
		`{"ts":` + strconv.FormatInt(base+500, 10) + `,"g":"a","name":"early","x":-2.25,"n":3,"ok":false}`,
		`{"ts":` + strconv.FormatInt(base+1000, 10) + `,"g":"a","n":9}`, // ties with the first: later in the log, so last(n) = 9
		`{"ts":` + strconv.FormatInt(base+61000, 10) + `,"g":"b"}`,      // no values: nulls
	}
	d := v.NewDelta()
	for i, r := range raw {
		ev, _, err := s.Prepare([]byte(r), base)
		if err != nil {
			t.Fatal(err)
		}
		d.FoldAt(int64(i%2)*10_000, logic.LogPos{Arrival: base + 2000, Seq: uint64(i + 1)}, &ev) // two epochs
	}
	var cells []SpeedCell
	for k, c := range d.Cells {
		cells = append(cells, SpeedCell{Epoch: k.Epoch, Window: k.Window, Group: k.Group, State: c.State(v)})
	}
	merged, err := Merge(v, 0, nil, cells, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, roll := range []Rollup{{}, {Step: 2 * 60_000, Dims: []int{}}} {
		rows, err := Apply(v, merged, roll, 0)
		if err != nil {
			t.Fatal(err)
		}
		q := Query{Rollup: roll, StepText: "1m", GroupBy: []string{"g"}, Order: -1}
		if roll.Step > 0 {
			q.GroupBy = nil
		}
		a := &answer{View: v, Query: q, Rows: rows}

		// JSON.
		var ja struct {
			Rows []map[string]any `json:"rows"`
		}
		if err := json.Unmarshal(encodeAnswer(a), &ja); err != nil {
			t.Fatal(err)
		}
		lastTS := logic.FormatTime(base + 1000)
		want := []map[string]any{
			{"last_name": "late", "first_x": -2.25, "last_n": 9.0, "first_ok": false, "last_ts": lastTS, "last_ok": true},
			{"last_name": nil, "first_x": nil, "last_n": nil, "first_ok": nil, "last_ts": logic.FormatTime(base + 61000), "last_ok": nil},
		}
		if roll.Step > 0 { // both groups in one bucket: b's event is the latest
			want = []map[string]any{{"last_name": "late", "first_x": -2.25, "last_n": 9.0, "first_ok": false, "last_ts": logic.FormatTime(base + 61000), "last_ok": true}}
		}
		if len(ja.Rows) != len(want) {
			t.Fatalf("step %d: %d rows, want %d: %v", roll.Step, len(ja.Rows), len(want), ja.Rows)
		}
		for i, w := range want {
			for k, x := range w {
				if ja.Rows[i][k] != x {
					t.Fatalf("step %d: row %d %s = %#v, want %#v", roll.Step, i, k, ja.Rows[i][k], x)
				}
			}
		}

		// CSV.
		var cb bytes.Buffer
		if err := writeCSV(&cb, a); err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(&cb).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		col := map[string]int{}
		for i, h := range recs[0] {
			col[h] = i
		}
		if got := recs[1][col["last_ts"]]; got != want[0]["last_ts"] {
			t.Fatalf("csv last_ts %q", got)
		}
		if got := recs[1][col["first_ok"]] + "," + recs[1][col["first_x"]] + "," + recs[1][col["last_name"]]; got != "false,-2.25,late" {
			t.Fatalf("csv %q", got)
		}

		// Arrow.
		ab, err := encodeArrow(a)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := ipc.NewReader(bytes.NewReader(ab))
		if err != nil {
			t.Fatal(err)
		}
		sc := rd.Schema()
		types := map[string]arrow.Type{"last_name": arrow.STRING, "first_x": arrow.FLOAT64, "last_n": arrow.INT64, "first_ok": arrow.BOOL, "last_ts": arrow.TIMESTAMP, "last_ok": arrow.BOOL}
		for name, typ := range types {
			i := sc.FieldIndices(name)
			if len(i) != 1 || sc.Field(i[0]).Type.ID() != typ || !sc.Field(i[0]).Nullable {
				t.Fatalf("arrow column %s: %v", name, sc.Field(i[0]))
			}
		}
		if !rd.Next() {
			t.Fatal("no arrow rows")
		}
		rec := rd.RecordBatch()
		at := func(name string) arrow.Array { return rec.Column(sc.FieldIndices(name)[0]) }
		if got := at("last_ts").(*array.Timestamp).Value(0); int64(got) != base+1000 && roll.Step == 0 {
			t.Fatalf("arrow last_ts %d", got)
		}
		if at("last_name").(*array.String).Value(0) != "late" || at("first_ok").(*array.Boolean).Value(0) || at("last_n").(*array.Int64).Value(0) != 9 || at("first_x").(*array.Float64).Value(0) != -2.25 {
			t.Fatal("arrow values differ from the JSON answer")
		}
		if roll.Step == 0 && (!at("last_name").IsNull(1) || !at("first_ok").IsNull(1) || at("last_ts").IsNull(1)) {
			t.Fatal("arrow: group b should have nulls but its time")
		}
		rd.Release()
	}
}

// TestOrderByPicks: order= sorts by a last or first measure of any type —
// strings bytewise, times by instant, false before true — nulls last.
func TestOrderByPicks(t *testing.T) {
	at := func(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
	rows := []ResultRow{
		{Window: 1, Values: []any{"b", at(30), true}},
		{Window: 2, Values: []any{nil, nil, nil}},
		{Window: 3, Values: []any{"a", at(10), false}},
		{Window: 4, Values: []any{"c", at(20), true}},
	}
	for _, c := range []struct {
		measure int
		desc    bool
		want    []int64
	}{
		{0, false, []int64{3, 1, 4, 2}}, {0, true, []int64{4, 1, 3, 2}},
		{1, false, []int64{3, 4, 1, 2}}, {1, true, []int64{1, 4, 3, 2}},
		{2, false, []int64{3, 1, 4, 2}}, {2, true, []int64{1, 4, 3, 2}},
	} {
		got := OrderLimit(slices.Clone(rows), c.measure, c.desc, 0)
		var ws []int64
		for _, r := range got {
			ws = append(ws, r.Window)
		}
		if !slices.Equal(ws, c.want) {
			t.Fatalf("measure %d desc %v: %v, want %v", c.measure, c.desc, ws, c.want)
		}
	}
}
