package tests

import (
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// TestServePartitions: over a stream of three partitions, braid up and a
// second braid serve both list every partition in /v1/status (owned, at
// its log's end, adding up to the stream's figures), /metrics has each
// partition's lag, and both answer the view with every event, whichever
// partition and process took it.
func TestServePartitions(t *testing.T) {
	cat := statusCatalog()
	cat.Streams[0].Partitions = 3
	a := testenv.NewStack(t, cat.YAML(), testenv.WithNATS())
	b := a.Twin()
	a.Start("up")
	b.Start("serve")

	const n = 60
	for r := range 6 {
		var lines []string
		for i := range n / 6 {
			lines = append(lines, fmt.Sprintf(`{"id":"e%d-%d","ts":"2026-11-28T12:00:00Z","amount":%d}`, r, i, i))
		}
		base := []string{a.Base, b.Base}[r%2]
		var out ingestResp
		if code := httpJSON(t, "POST", base+"/v1/streams/orders/events", "application/x-ndjson", []byte(strings.Join(lines, "\n")), &out); code != 200 || out.Accepted != n/6 {
			t.Fatalf("ingest at %s: %d %+v", base, code, out)
		}
	}

	type partition struct {
		Partition int     `json:"partition"`
		Owner     *string `json:"owner"`
		LastSeq   *uint64 `json:"last_seq"`
		Position  *uint64 `json:"position"`
		Lag       *uint64 `json:"lag"`
		Watermark *string `json:"watermark"`
	}
	type stream struct {
		Accepted *uint64 `json:"accepted"`
		Log      struct {
			LastSeq uint64 `json:"last_seq"`
		} `json:"log"`
		Speed struct {
			Seq uint64  `json:"seq"`
			Lag *uint64 `json:"lag"`
		} `json:"speed"`
		Partitions []partition `json:"partitions"`
	}
	var answers [2]any
	for i, base := range []string{a.Base, b.Base} {
		eventually(t, "the partitions in the status at "+base, 60*time.Second, func() string {
			var st struct {
				Streams map[string]stream `json:"streams"`
			}
			if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &st); code != 200 {
				return fmt.Sprintf("status %d", code)
			}
			o := st.Streams["orders"]
			if o.Accepted == nil || *o.Accepted != n {
				return fmt.Sprintf("accepted %v, want %d", o.Accepted, n)
			}
			if len(o.Partitions) != 3 {
				return fmt.Sprintf("%d partitions", len(o.Partitions))
			}
			var last, pos uint64
			for p, e := range o.Partitions {
				if e.Partition != p || e.Owner == nil || *e.Owner == "" || e.LastSeq == nil || e.Position == nil || *e.Position != *e.LastSeq || e.Lag == nil || *e.Lag != 0 {
					return fmt.Sprintf("partition %d: %+v", p, e)
				}
				if *e.LastSeq > 0 && e.Watermark == nil {
					return fmt.Sprintf("partition %d has records and no watermark", p)
				}
				last, pos = last+*e.LastSeq, pos+*e.Position
			}
			if o.Log.LastSeq != last || o.Speed.Seq != pos || o.Speed.Lag == nil || *o.Speed.Lag != 0 {
				return fmt.Sprintf("the stream's figures do not add the partitions up: %+v", o)
			}
			return ""
		})
		eventually(t, "every event in the answer at "+base, 60*time.Second, func() string {
			var ans struct {
				Rows []map[string]any `json:"rows"`
			}
			url := base + "/v1/views/n_per_min?from=2026-11-28T12:00:00Z&to=2026-11-28T12:01:00Z"
			if code := httpJSON(t, "GET", url, "", nil, &ans); code != 200 {
				return fmt.Sprintf("query %d", code)
			}
			if len(ans.Rows) != 1 || ans.Rows[0]["n"] != float64(n) {
				return fmt.Sprintf("rows %v, want one with n %d", ans.Rows, n)
			}
			answers[i] = ans.Rows
			return ""
		})
	}
	if !reflect.DeepEqual(answers[0], answers[1]) {
		t.Fatalf("the processes answer differently: %v and %v", answers[0], answers[1])
	}

	resp, err := http.Get(a.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for p := range 3 {
		if line := fmt.Sprintf(`braid_partition_lag{layer="speed",partition="%d",stream="orders"} 0`, p); !strings.Contains(string(body), line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}
