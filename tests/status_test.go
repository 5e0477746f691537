package tests

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

func statusCatalog() testenv.Catalog {
	return testenv.Catalog{
		Epoch: "1s",
		Batch: "every: 0",
		Streams: []testenv.Stream{{
			Name: "orders", Time: "ts", ID: "id", Fields: []string{"ts: time", "id: string", "amount: float"}, Required: []string{"amount"},
		}},
		Views: []testenv.View{{Name: "n_per_min", Stream: "orders", Window: "1m", Measures: []string{"n: count()"}}},
	}
}

// TestStatusCountsAcrossProcesses: /v1/status accepted and rejected count
// what the log holds, so every process answers the same, whoever stored
// the events: braid up, a second braid serve and braid ingest, with
// repeated ids and a retried request (stored once, dead-lettered once).
func TestStatusCountsAcrossProcesses(t *testing.T) {
	a := testenv.NewStack(t, statusCatalog().YAML(), testenv.WithNATS())
	// The second process: the same configuration on another port and data dir.
	b := a.Twin()
	a.Start("up")
	b.Start("serve")
	cfgA, baseA, baseB := a.Config, a.Base, b.Base

	ev := func(id string) string { return fmt.Sprintf(`{"id":%q,"ts":"2026-11-28T12:00:00Z","amount":1}`, id) }
	bad := func(id string) string {
		return fmt.Sprintf(`{"id":%q,"ts":"2026-11-28T12:00:00Z","amount":"oops"}`, id)
	}
	post := func(base string, lines ...string) ingestResp {
		t.Helper()
		var r ingestResp
		if code := httpJSON(t, "POST", base+"/v1/streams/orders/events", "application/x-ndjson", []byte(strings.Join(lines, "\n")), &r); code != 200 {
			t.Fatalf("ingest at %s: status %d", base, code)
		}
		return r
	}
	ids := map[string]bool{} // distinct ids of valid events sent
	badIDs := map[string]bool{}
	var reqA []string
	for i := range 10 {
		reqA = append(reqA, ev(fmt.Sprintf("a%d", i)))
		ids[fmt.Sprintf("a%d", i)] = true
	}
	reqA = append(reqA, bad("x1"), bad("x2"))
	badIDs["x1"], badIDs["x2"] = true, true
	if r := post(baseA, reqA...); r.Accepted != 10 || r.Rejected != 2 {
		t.Fatalf("first request: %+v", r)
	}
	if r := post(baseA, reqA...); r.Accepted != 10 || r.Rejected != 2 { // a retry: stored once, dead-lettered once
		t.Fatalf("retried request: %+v", r)
	}
	var reqB []string
	for i := 5; i < 15; i++ {
		reqB = append(reqB, ev(fmt.Sprintf("a%d", i)))
		ids[fmt.Sprintf("a%d", i)] = true
	}
	reqB = append(reqB, bad("x3"))
	badIDs["x3"] = true
	if r := post(baseB, reqB...); r.Accepted != 10 || r.Rejected != 1 {
		t.Fatalf("request to the second process: %+v", r)
	}
	file := filepath.Join(t.TempDir(), "orders.ndjson")
	lines := []string{ev("a1"), ev("a2")}
	for i := range 5 {
		lines = append(lines, ev(fmt.Sprintf("f%d", i)))
		ids[fmt.Sprintf("f%d", i)] = true
	}
	lines = append(lines, bad("x4"))
	badIDs["x4"] = true
	writeFile(t, file, strings.Join(lines, "\n")+"\n")
	if out, code := testenv.RunBraid(t, "ingest", "--config", cfgA, "--stream", "orders", "--file", file); code != 0 {
		t.Fatalf("braid ingest: exit %d\n%s", code, out)
	}

	type streamStatus struct {
		Accepted    *uint64 `json:"accepted"`
		Rejected    *uint64 `json:"rejected"`
		DeadLetters *uint64 `json:"dead_letters"`
		AcceptedErr string  `json:"accepted_error"`
	}
	for _, base := range []string{baseA, baseB} {
		eventually(t, "status at "+base, 30*time.Second, func() string {
			var st struct {
				Streams map[string]streamStatus `json:"streams"`
			}
			if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &st); code != 200 {
				return fmt.Sprintf("status %d", code)
			}
			o := st.Streams["orders"]
			if o.Accepted == nil || o.Rejected == nil || o.DeadLetters == nil {
				return fmt.Sprintf("counts missing: %+v", o)
			}
			if *o.Accepted != uint64(len(ids)) || *o.Rejected != uint64(len(badIDs)) || *o.DeadLetters != *o.Rejected {
				return fmt.Sprintf("accepted %d, rejected %d, dead letters %d; want %d, %d and %d", *o.Accepted, *o.Rejected, *o.DeadLetters, len(ids), len(badIDs), len(badIDs))
			}
			return ""
		})
	}
}
