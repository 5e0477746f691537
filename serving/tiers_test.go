package serving_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

// fakeUsage is a SpeedUsage with fixed costs per view, counting its calls.
type fakeUsage struct {
	mu    sync.Mutex
	cost  map[string]serving.SpeedCost
	calls map[string]int
}

func (f *fakeUsage) SpeedUsage(_ context.Context, v *logic.View) (serving.SpeedCost, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[v.Name]++
	return f.cost[v.Name], nil
}

// arrivedSpeed is a speed position at seq whose last record arrived at
// arrival (for freshness), the given views joined.
type arrivedSpeed struct {
	seq     uint64
	arrival int64
	joined  []*logic.View
}

func (a arrivedSpeed) StreamStatus(context.Context, string) (query.StreamSpeed, error) {
	views := map[string]query.ViewSpeed{}
	for _, v := range a.joined {
		views[v.StateKey()] = query.ViewSpeed{JoinedOK: true, Joined: a.seq}
	}
	return query.SpeedOf([]query.PartSpeed{{Found: true, Seq: a.seq, LastArrival: a.arrival, Watermark: a.arrival, Views: views}}), nil
}

func (arrivedSpeed) ReadCells(context.Context, *logic.View, int64, int64, int64, func(query.SpeedCell) error) error {
	return nil
}

// TestTiersInStatusMetricsAndAnswers: each view's tier, freshness and
// Redis cost show in /v1/status (matching the document) and /metrics, the
// cost measured once per period however often they are asked; the views
// list and every answer carry the tier; a batch-tier view has no audit.
func TestTiersInStatusMetricsAndAnswers(t *testing.T) {
	s := testenv.OrdersStream(t)
	live := testView(t, s, "live", time.Minute, 0)
	daily, err := logic.NewView("daily", logic.ViewDef{Stream: s.Name, Window: 24 * time.Hour, Measures: testMeasures[:1], Tier: "batch"}, s)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	views, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cutoff := now - 90_000
	if err := views.Publish(&batchviews.Version{Views: map[string]batchviews.ViewVersion{
		"live": {Cutoff: cutoff, Definition: live.Definition()}, "daily": {Cutoff: cutoff, Definition: daily.Definition()}}},
		map[string][]batchviews.Row{"live": nil, "daily": nil}); err != nil {
		t.Fatal(err)
	}
	usage := &fakeUsage{cost: map[string]serving.SpeedCost{"live": {Cells: 12, Keys: 5, Bytes: 4096, Exact: true}}, calls: map[string]int{}}
	sp := arrivedSpeed{seq: 9, arrival: now - 4_000, joined: []*logic.View{live}}
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, live, daily), Speed: sp, SpeedStatus: sp, Views: views, SpeedUsage: usage,
		SpeedCostEvery: time.Hour, Registry: prometheus.NewRegistry(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()

	doc, err := openapi3.NewLoader().LoadFromData(serving.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		code, _, body := get(t, h.URL+"/v1/status")
		var answer any
		if err := json.Unmarshal(body, &answer); code != 200 || err != nil {
			t.Fatalf("status: %d %v %s", code, err, body)
		}
		if err := doc.Components.Schemas["Status"].Value.VisitJSON(answer); err != nil {
			t.Fatalf("the status does not match the document: %v\n%s", err, body)
		}
		checkSortedKeys(t, body)
		var st struct {
			Views map[string]struct {
				Tier        string
				State       string
				FreshnessMs *int64 `json:"freshness_ms"`
				SpeedCost   *struct {
					Cells, Keys, Bytes int64
					Exact              bool
				} `json:"speed_cost"`
			}
			Streams map[string]struct{ Speed map[string]any }
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		lv, dv := st.Views["live"], st.Views["daily"]
		if lv.Tier != "live" || dv.Tier != "batch" || lv.State != "ready" || dv.State != "ready" {
			t.Fatalf("tiers and states: %s", body)
		}
		// No log here: a live view is as fresh as its last arrival; a
		// batch-tier one as its cutoff.
		if lv.FreshnessMs == nil || *lv.FreshnessMs < 4_000 || *lv.FreshnessMs > 60_000 || dv.FreshnessMs == nil || *dv.FreshnessMs < 90_000 {
			t.Fatalf("freshness: %s", body)
		}
		if c := lv.SpeedCost; c == nil || c.Cells != 12 || c.Keys != 5 || c.Bytes != 4096 || !c.Exact {
			t.Fatalf("live view's cost: %s", body)
		}
		if c := dv.SpeedCost; c == nil || c.Cells != 0 || c.Bytes != 0 {
			t.Fatalf("batch-tier view's cost: %s", body)
		}
	}
	code, _, metrics := get(t, h.URL+"/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`braid_view_speed_cells{view="live"} 12`, `braid_view_speed_bytes{view="live"} 4096`, `braid_view_speed_keys{view="live"} 5`,
		`braid_view_speed_cells{view="daily"} 0`, `braid_view_speed_bytes{view="daily"} 0`,
		`braid_view_freshness_seconds{tier="batch",view="daily"} `, `braid_view_freshness_seconds{tier="live",view="live"} `,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	usage.mu.Lock()
	if usage.calls["live"] != 1 || usage.calls["daily"] != 1 {
		t.Errorf("costs measured %v times within one period, want once each", usage.calls)
	}
	usage.mu.Unlock()

	// The views list and the answers carry the tier.
	_, _, body := get(t, h.URL+"/v1/views")
	var list struct{ Views []struct{ Name, Tier string } }
	if err := json.Unmarshal(body, &list); err != nil || len(list.Views) != 2 || list.Views[0].Tier != "live" || list.Views[1].Tier != "batch" {
		t.Fatalf("views: %s", body)
	}
	from, to := time.UnixMilli(now).UTC().Truncate(24*time.Hour).Add(-48*time.Hour).Format(time.RFC3339), time.UnixMilli(now).UTC().Format(time.RFC3339)
	for _, format := range []string{"json", "csv", "arrow"} {
		code, hdr, body := get(t, h.URL+"/v1/views/daily?from="+from+"&to="+to+"&format="+format)
		if code != 200 || hdr.Get(serving.TierHeader) != "batch" {
			t.Fatalf("daily as %s: %d, tier header %q: %s", format, code, hdr.Get(serving.TierHeader), body)
		}
		if format == "json" && !strings.Contains(string(body), `"tier":"batch"`) {
			t.Fatalf("daily as JSON: %s", body)
		}
	}
	if code, hdr, _ := get(t, h.URL+"/v1/views/live?from="+from+"&to="+to); code != 200 || hdr.Get(serving.TierHeader) != "live" {
		t.Fatalf("live: %d, tier header %q", code, hdr.Get(serving.TierHeader))
	}
	if code, _, body := get(t, h.URL+"/v1/views/daily/audit"); code != 409 {
		t.Fatalf("audit of a batch-tier view: %d %s", code, body)
	}
}
