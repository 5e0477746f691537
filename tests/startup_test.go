package tests

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// TestStartBeforeNATS: the processes of a deployment start in any order.
// braid serve, speed, archive and batch started while nats-server is down
// wait for it (saying so) instead of exiting, and once it is up they
// answer, ingest, and give exact answers before and after a batch run.
func TestStartBeforeNATS(t *testing.T) {
	cat := testenv.E2E()
	cat.Views = cat.Views[:1] // orders_by_country
	st := testenv.NewStack(t, cat.YAML(), testenv.WithNATSProc())
	st.NATSProc.Kill()
	serve := st.Spawn("serve")
	speed := st.Spawn("speed") // one data_dir: the lake is files there
	st.Spawn("archive")
	st.Spawn("batch")
	eventually(t, "serve and speed saying they wait for NATS", 30*time.Second, func() string {
		for _, p := range []*testenv.Proc{serve, speed} {
			if !strings.Contains(p.Output(), "waiting for NATS") {
				return "not yet"
			}
		}
		return ""
	})
	st.NATSProc.Start(t)
	st.WaitViewsReady()

	orders := genOrders(rand.New(rand.NewPCG(20, 26)), time.Now().Add(-time.Hour), 400, 0)
	if r := post(t, st.Base, ndjson(orders)); r.Accepted != len(orders) {
		t.Fatalf("ingest: %+v", r)
	}
	from, to := time.Now().Add(-2*time.Hour), time.Now().Add(time.Hour)
	want := expect(orders)
	eventually(t, "exact answers from the speed layer", 30*time.Second, func() string {
		return compare(query(t, st.Base, from, to), want, "speed", "batch+speed")
	})
	var run batchRun
	if code := httpJSON(t, "POST", st.Base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run.Status != "succeeded" {
		t.Fatalf("batch run: %d %+v", code, run)
	}
	eventually(t, "exact answers after the batch run", 30*time.Second, func() string {
		return compare(query(t, st.Base, from, to), want, "batch", "batch+speed")
	})
}
