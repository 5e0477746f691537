package tests

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// TestReplayCommand: `braid replay` rebuilds the speed state from the start
// of the log and exits once it has caught up — also when a stream has no
// views (the speed layer does not run those); answers are exact afterwards.
func TestReplayCommand(t *testing.T) {
	cat := testenv.E2E()
	cat.Streams = append(cat.Streams, testenv.Stream{Name: "clicks", Time: "ts", Fields: []string{"ts: time", "page: string"}})
	st := testenv.Up(t, cat.YAML(), testenv.WithNATSProc())
	base, p := st.Base, st.Braid
	rng := rand.New(rand.NewPCG(7, 7))
	start := time.Now().UTC().Truncate(time.Minute).Add(-90 * time.Minute)
	orders := genOrders(rng, start, 800, 0)
	if r := post(t, base, ndjson(orders)); r.Accepted != 800 {
		t.Fatalf("ingest: %+v", r)
	}
	var clicks ingestResp
	if code := httpJSON(t, "POST", base+"/v1/streams/clicks/events", "application/json", []byte(`{"ts":"2026-01-01T00:00:00Z","page":"/"}`), &clicks); code != 200 || clicks.Accepted != 1 {
		t.Fatalf("clicks ingest: %d %+v", code, clicks)
	}
	want := expect(orders)
	eventually(t, "speed answer", 60*time.Second, func() string { return compare(query(t, base, start, start.Add(time.Hour)), want, "speed") })
	if err := p.Stop(t); err != nil {
		t.Fatal(err)
	}
	out, code := testenv.RunBraid(t, "replay", "--config", st.Config)
	if code != 0 || !strings.Contains(out, "rebuilding from the start of the log") {
		t.Fatalf("braid replay: exit %d\n%s", code, out)
	}
	p = st.Start("up")
	eventually(t, "answer after the replay", 60*time.Second, func() string {
		return compare(query(t, base, start, start.Add(time.Hour)), want, "speed")
	})
	if err := p.Stop(t); err != nil {
		t.Fatal(err)
	}
}
