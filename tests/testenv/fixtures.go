package testenv

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
)

// OrdersStream is the compiled stream "orders" of the serving and ingest
// tests: ts, id, country (nullable), device (required), amount (nullable
// float), items (nullable int), email (PII, hashed with key "test-key"),
// 30 s of allowed lateness.
func OrdersStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt, "email": logic.TypeString},
		Required: []string{"device"}, PII: map[string]logic.PIIMode{"email": logic.PIIHash}, AllowedLateness: 30 * time.Second}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// CounterValue is the value of the first series of a counter in reg whose
// labels include the given ones (a subset); it fails the test if there is
// none.
func CounterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := true
			for _, lp := range m.GetLabel() {
				if want, has := labels[lp.GetName()]; has && want != lp.GetValue() {
					ok = false
				}
			}
			if ok {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

// OrderEvent is a raw event of OrdersStream (no email) with the epoch it
// arrived in; a nil field is absent from the event.
type OrderEvent struct {
	Epoch   int64
	TS      int64
	Country *string
	Device  string
	Amount  *float64
	Items   *int64
}

// JSON is the event as ingest receives it, with the given id.
func (e OrderEvent) JSON(id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"id":%q,"ts":%d,"device":%q`, id, e.TS, e.Device)
	if e.Country != nil {
		fmt.Fprintf(&b, `,"country":%q`, *e.Country)
	}
	if e.Amount != nil {
		fmt.Fprintf(&b, `,"amount":%v`, *e.Amount)
	}
	if e.Items != nil {
		fmt.Fprintf(&b, `,"items":%d`, *e.Items)
	}
	b.WriteString("}")
	return b.String()
}

// RandomOrderEvents returns n events with times in [base, base+span),
// epochs drawn from epochs, devices ios or web, and country (DE, FR, US;
// absent one time in six), amount (-20 to 180, two decimals; absent one time
// in five) and items (-2 to 7; absent one time in four).
func RandomOrderEvents(r *rand.Rand, n int, base, span int64, epochs []int64) []OrderEvent {
	countries := []string{"DE", "FR", "US"}
	devices := []string{"ios", "web"}
	out := make([]OrderEvent, n)
	for i := range out {
		e := OrderEvent{Epoch: epochs[r.IntN(len(epochs))], TS: base + r.Int64N(span), Device: devices[r.IntN(len(devices))]}
		if r.IntN(6) > 0 {
			c := countries[r.IntN(len(countries))]
			e.Country = &c
		}
		if r.IntN(5) > 0 {
			a := math.Round(r.Float64()*20000-2000) / 100
			e.Amount = &a
		}
		if r.IntN(4) > 0 {
			it := r.Int64N(10) - 2
			e.Items = &it
		}
		out[i] = e
	}
	return out
}
