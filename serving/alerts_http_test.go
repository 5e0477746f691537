package serving_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/alerts"
)

const alertsDoc = `
streams:
  sensors:
    time: ts
    fields: { ts: time, site: string, temp: float }
views:
  temps:
    stream: sensors
    window: 1m
    group_by: [site]
    measures: { max_temp: max(temp) }
alerts:
  hot:
    view: temps
    when: "max_temp > 80"
    action: { nats: "ops.hot" }
`

// fakeAlerts answers from fixed values (a unit test of the handlers).
type fakeAlerts struct {
	err      error
	replayed []string
}

func (f *fakeAlerts) List(context.Context) []alerts.Status {
	return []alerts.Status{{Name: "hot", View: "temps", Firing: nil, DeadLetters: 2}}
}

func (f *fakeAlerts) DeadLetters(_ context.Context, name string, limit int) ([]alerts.DeadLetter, error) {
	if f.err != nil {
		return nil, f.err
	}
	return []alerts.DeadLetter{{ID: fmt.Sprintf("%s/%d", name, limit)}}, nil
}

func (f *fakeAlerts) Replay(_ context.Context, name string) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	f.replayed = append(f.replayed, name)
	return 7, nil
}

func TestAlertRoutes(t *testing.T) {
	cfg, err := config.Parse([]byte(alertsDoc), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	start := func(a serving.Alerts, cat *config.Catalog) string {
		o := serving.Options{Catalog: cat, Registry: prometheus.NewRegistry(), Logger: discardLogger()}
		if a != nil {
			o.Alerts = a
		}
		srv, err := serving.New(o)
		if err != nil {
			t.Fatal(err)
		}
		h := httptest.NewServer(srv.Handler())
		t.Cleanup(h.Close)
		return h.URL
	}
	type body struct {
		Alerts      []alerts.Status     `json:"alerts"`
		DeadLetters []alerts.DeadLetter `json:"dead_letters"`
		Replayed    int                 `json:"replayed"`
		Error       string              `json:"error"`
	}
	call := func(method, url string) (int, body) {
		var b body
		code := doJSON(t, method, url, &b)
		return code, b
	}

	// Without the alerts service: 503 while the catalog has alerts, an
	// empty list without any.
	base := start(nil, cat)
	if code, b := call("GET", base+"/v1/alerts"); code != 503 || b.Error != "alerts unavailable" {
		t.Errorf("GET /v1/alerts without the service: %d %+v", code, b)
	}
	if code, _ := call("POST", base+"/v1/alerts/hot/dlq/replay"); code != 503 {
		t.Errorf("replay without the service: %d", code)
	}
	empty, err := config.Parse([]byte(alertsDoc[:len(alertsDoc)-len(`alerts:
  hot:
    view: temps
    when: "max_temp > 80"
    action: { nats: "ops.hot" }
`)]), nil)
	if err != nil {
		t.Fatal(err)
	}
	ecat, err := empty.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, b := call("GET", start(nil, ecat)+"/v1/alerts"); code != 200 || b.Alerts == nil || len(b.Alerts) != 0 {
		t.Errorf("GET /v1/alerts without alerts: %d %+v", code, b)
	}

	f := &fakeAlerts{}
	base = start(f, cat)
	if code, b := call("GET", base+"/v1/alerts"); code != 200 || len(b.Alerts) != 1 || b.Alerts[0].DeadLetters != 2 {
		t.Errorf("GET /v1/alerts: %d %+v", code, b)
	}
	if code, b := call("GET", base+"/v1/alerts/hot/dlq?limit=5"); code != 200 || len(b.DeadLetters) != 1 || b.DeadLetters[0].ID != "hot/5" {
		t.Errorf("dead letters: %d %+v", code, b)
	}
	if code, b := call("GET", base+"/v1/alerts/hot/dlq"); code != 200 || b.DeadLetters[0].ID != "hot/100" {
		t.Errorf("dead letters, default limit: %d %+v", code, b)
	}
	for _, l := range []string{"0", "x", "10001"} {
		if code, _ := call("GET", base+"/v1/alerts/hot/dlq?limit="+l); code != 400 {
			t.Errorf("limit=%s: %d, want 400", l, code)
		}
	}
	if code, b := call("POST", base+"/v1/alerts/hot/dlq/replay"); code != 200 || b.Replayed != 7 || len(f.replayed) != 1 {
		t.Errorf("replay: %d %+v", code, b)
	}
	for _, u := range []string{"/v1/alerts/nope/dlq", "/v1/alerts/nope/dlq/replay"} {
		method := "GET"
		if u == "/v1/alerts/nope/dlq/replay" {
			method = "POST"
		}
		if code, b := call(method, base+u); code != 404 || b.Error != "unknown alert" {
			t.Errorf("%s %s: %d %+v", method, u, code, b)
		}
	}
	f.err = errors.New("nats: timeout")
	if code, _ := call("GET", base+"/v1/alerts/hot/dlq"); code != 503 {
		t.Errorf("a dead-letter queue that cannot be read: %d, want 503", code)
	}
}

// doJSON sends a request without a body and decodes the JSON answer.
func doJSON(t *testing.T, method, url string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s %s: decode: %v", method, url, err)
	}
	return resp.StatusCode
}
