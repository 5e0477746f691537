package logic_test

import (
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

func benchStream(b testing.TB) *logic.Stream {
	s, err := logic.NewStream("orders", logic.StreamDef{
		Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"amount": logic.TypeFloat, "items": logic.TypeInt, "email": logic.TypeString},
		PII: map[string]logic.PIIMode{"email": logic.PIIHash},
	}, []byte("bench-key"))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkPrepare(b *testing.B) {
	s := benchStream(b)
	raw := []byte(`{"ts":"2024-05-01T12:00:00.123Z","id":"o-123456","country":"FR","amount":12.5,"items":3,"email":"ann@example.com"}`)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, _, err := s.Prepare(raw, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepareEncodingJSON is BenchmarkPrepare with the encoding/json
// parser Prepare used before its own scanner (the oracle of
// FuzzParseMatchesEncodingJSON): the baseline, measured alike.
func BenchmarkPrepareEncodingJSON(b *testing.B) {
	s := benchStream(b)
	o := oracle{s, []byte("bench-key")}
	raw := []byte(`{"ts":"2024-05-01T12:00:00.123Z","id":"o-123456","country":"FR","amount":12.5,"items":3,"email":"ann@example.com"}`)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	if ev, rec, _ := o.prepare(raw, now, true); rec == nil {
		b.Fatal("rejected")
	} else if ev2, rec2, err := s.Prepare(raw, now); err != nil || string(rec2) != string(rec) || !sameEvent(ev, ev2) {
		b.Fatalf("oracle %s, Prepare %s", rec, rec2)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		o.prepare(raw, now, true)
	}
}

// BenchmarkDecode reads canonical records back (the batch layer and
// replays do it for every stored event).
func BenchmarkDecode(b *testing.B) {
	s := benchStream(b)
	raw := []byte(`{"ts":"2024-05-01T12:00:00.123Z","id":"o-123456","country":"FR","amount":12.5,"items":3,"email":"ann@example.com"}`)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	_, rec, err := s.Prepare(raw, now)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		if _, err := s.Decode(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	s := benchStream(b)
	raw := []byte(`{"ts":"2024-05-01T12:00:00.123Z","id":"o-123456","country":"FR","amount":12.5,"items":3,"email":"ann@example.com"}`)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	ev, _, err := s.Prepare(raw, now)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Encode(ev)
	}
}

func foldView(b testing.TB, where string) (*logic.View, []logic.Event) {
	s := benchStream(b)
	v, err := logic.NewView("v", logic.ViewDef{Stream: "orders", Window: time.Minute, GroupBy: []string{"country"}, Where: where,
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "revenue", Expr: "sum(amount)"},
			{Name: "avg", Expr: "avg(amount)"}, {Name: "lo", Expr: "min(items)"}, {Name: "hi", Expr: "max(amount)"}}}, s)
	if err != nil {
		b.Fatal(err)
	}
	countries := []string{"FR", "DE", "US", "GB"}
	evs := make([]logic.Event, 256)
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	for i := range evs {
		vals := make([]logic.Value, len(s.Fields))
		vals[s.FieldIndex("ts")] = logic.Value{Kind: logic.TypeTime, I: base + int64(i%4)*1000}
		vals[s.FieldIndex("country")] = logic.Value{Kind: logic.TypeString, S: countries[i%4]}
		vals[s.FieldIndex("amount")] = logic.Value{Kind: logic.TypeFloat, F: float64(i)}
		vals[s.FieldIndex("items")] = logic.Value{Kind: logic.TypeInt, I: int64(i % 7)}
		evs[i] = logic.Event{Time: base + int64(i%4)*1000, Values: vals}
	}
	return v, evs
}

func BenchmarkFold(b *testing.B) {
	v, evs := foldView(b, "")
	d := v.NewDelta()
	for i := range evs {
		d.Fold(1, &evs[i])
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.Fold(1, &evs[i&255])
		i++
	}
}

func BenchmarkFoldWhere(b *testing.B) {
	v, evs := foldView(b, "amount > 10 and country in ('FR', 'DE', 'US')")
	d := v.NewDelta()
	for i := range evs {
		d.Fold(1, &evs[i])
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.Fold(1, &evs[i&255])
		i++
	}
}

// TestFoldDoesNotAllocateWhenWarm: once a cell exists, folding into it
// allocates nothing (the speed layer folds every event).
func TestFoldDoesNotAllocateWhenWarm(t *testing.T) {
	for _, where := range []string{"", "amount >= 0 and country is not null"} {
		v, evs := foldView(t, where)
		d := v.NewDelta()
		for i := range evs {
			d.Fold(1, &evs[i])
		}
		i := 0
		if n := testing.AllocsPerRun(500, func() { d.Fold(1, &evs[i&255]); i++ }); n != 0 {
			t.Errorf("where %q: Fold allocates %v times per event once warm", where, n)
		}
	}
}
