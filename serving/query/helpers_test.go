package query

import (
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

// testStream: ts, id, country (nullable), device, amount (nullable float),
// items (nullable int); 30s of allowed lateness.
func testStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt},
		Required: []string{"device"}, AllowedLateness: 30 * time.Second}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testView(t testing.TB, s *logic.Stream, name string, window, hop time.Duration) *logic.View {
	t.Helper()
	v, err := logic.NewView(name, logic.ViewDef{Stream: s.Name, Window: window, Hop: hop, GroupBy: []string{"country", "device"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "revenue", Expr: "sum(amount)"}, {Name: "avg", Expr: "avg(amount)"},
			{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(items)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
