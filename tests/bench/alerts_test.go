package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// TestBenchAlerts: event accepted → webhook received, at a steady 20,000
// events/s in the background, next to the freshness of the same run (the
// POST's answer → the event in a merged query). Each probe is an order of
// a country of its own with an amount no other order has, so its row
// crosses the alert's condition at once; the receiver is an httptest
// server in this process, timing each delivery on arrival.
func TestBenchAlerts(t *testing.T) {
	benchOnly(t)
	var mu sync.Mutex
	got := map[string]time.Time{} // probe country -> received
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		var b struct {
			Group map[string]any `json:"group"`
		}
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &b)
		if c, ok := b.Group["country"].(string); ok {
			mu.Lock()
			if _, seen := got[c]; !seen {
				got[c] = at
			}
			mu.Unlock()
		}
	}))
	defer rcv.Close()
	c := benchCatalog()
	c.Extra = fmt.Sprintf("alerts:\n  big:\n    view: orders_by_country\n    when: \"biggest > 1000000\"\n    action: { webhook: %q }\n", rcv.URL+"/hook")
	base := testenv.Up(t, c.YAML()).Base

	loadSent, stopLoad := steadyOrders(t, base, 20_000, 1000)
	time.Sleep(3 * time.Second) // the load settles
	loadStart, sentBefore := time.Now(), loadSent.Load()
	var hook, fresh []float64
	probe := func(i int, measureFresh bool) {
		ts := time.Now().UTC()
		country := fmt.Sprintf("P%d", i)
		line, _ := json.Marshal(map[string]any{"ts": ts.Format(time.RFC3339Nano), "order_id": fmt.Sprintf("p-%d", i), "country": country, "amount": 2e6})
		resp, err := http.Post(base+"/v1/streams/orders/events", "application/json", bytes.NewReader(line))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t0 := time.Now()
		if measureFresh {
			untilInView(t, base, ts, country, t0.Add(30*time.Second))
			fresh = append(fresh, float64(time.Since(t0).Microseconds())/1000)
		}
		for deadline := t0.Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			at, ok := got[country]
			mu.Unlock()
			if ok {
				hook = append(hook, float64(at.Sub(t0).Microseconds())/1000)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("probe %s not delivered within 30 s", country)
			}
		}
	}
	// Alternate: probes timed to the webhook alone, and probes whose
	// freshness is measured too (the query polling adds load).
	for i := range 200 {
		probe(i, i%2 == 1)
		time.Sleep(20 * time.Millisecond)
	}
	stopLoad()
	t.Logf("measured while ingesting %.0f events/s in the background", float64(loadSent.Load()-sentBefore)/time.Since(loadStart).Seconds())
	sort.Float64s(hook)
	sort.Float64s(fresh)
	report(t, "alert_webhook_p50", hook[len(hook)/2], "ms", 0)
	report(t, "alert_webhook_p99", hook[len(hook)*99/100], "ms", 0)
	report(t, "alert_freshness_p50", fresh[len(fresh)/2], "ms", 0)
	report(t, "alert_freshness_p99", fresh[len(fresh)*99/100], "ms", 0)
	if resp, err := http.Get(base + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "braid_alert_evaluation_seconds_sum") || strings.HasPrefix(l, "braid_alert_evaluation_seconds_count") {
				t.Log(l)
			}
		}
	}
}
