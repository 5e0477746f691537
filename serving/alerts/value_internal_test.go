package alerts

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

// TestValueOf: every shape a finalized measure takes (the engine's rows,
// and rows read back from JSON) reads as the Value a condition compares.
func TestValueOf(t *testing.T) {
	at := time.Date(2026, 12, 8, 10, 0, 0, 500e6, time.UTC)
	for _, c := range []struct {
		t    logic.FieldType
		x    any
		want logic.Value
	}{
		{logic.TypeInt, int64(7), logic.Value{Kind: logic.TypeInt, I: 7}},
		{logic.TypeFloat, int64(7), logic.Value{Kind: logic.TypeFloat, F: 7}},
		{logic.TypeInt, float64(7), logic.Value{Kind: logic.TypeInt, I: 7}},
		{logic.TypeFloat, math.NaN(), logic.Value{}},
		{logic.TypeString, "DE", logic.Value{Kind: logic.TypeString, S: "DE"}},
		{logic.TypeTime, at, logic.Value{Kind: logic.TypeTime, I: at.UnixMilli()}},
		{logic.TypeTime, at.Format(time.RFC3339Nano), logic.Value{Kind: logic.TypeTime, I: at.UnixMilli()}},
		{logic.TypeBool, true, logic.Value{Kind: logic.TypeBool, I: 1}},
		{logic.TypeFloat, json.Number("2.5"), logic.Value{Kind: logic.TypeFloat, F: 2.5}},
		{logic.TypeFloat, nil, logic.Value{}},
	} {
		if got := valueOf(c.t, c.x); got != c.want {
			t.Errorf("valueOf(%s, %#v) = %+v, want %+v", c.t, c.x, got, c.want)
		}
	}
}
