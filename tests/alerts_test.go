package tests

// End-to-end tests of alerts: real braid processes, a real NATS and Redis,
// a webhook receiver (an httptest server of the test's own that checks
// every signature with crypto/hmac) and a NATS subscriber. What fired is
// checked against an independent evaluation of each condition over the
// events the test sent.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/braid-data/braid/tests/testenv"
)

const (
	hookSecretEnv = "BRAID_TEST_HOOK_SECRET"
	hookSecret    = "s3cr3t-for-the-alert-tests"
)

// hookBody is a delivery's body as the contract names its fields.
type hookBody struct {
	ID          string         `json:"id"`
	Alert       string         `json:"alert"`
	View        string         `json:"view"`
	WindowStart string         `json:"window_start"`
	Group       map[string]any `json:"group"`
	Values      map[string]any `json:"values"`
	Source      string         `json:"source"`
	Exact       bool           `json:"exact"`
	Final       bool           `json:"final"`
	State       string         `json:"state"`
	At          string         `json:"at"`
}

// hook is one request the receiver took.
type hook struct {
	path   string
	body   hookBody
	signed bool // a signature was sent
	sigOK  bool // and it is the HMAC-SHA256 of the body with the secret
	status int  // what the receiver answered
}

// receiver is the tests' webhook receiver: it answers 200, or 500 on the
// paths set failing.
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []hook
	failing map[string]bool
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{failing: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		raw, _ := io.ReadAll(req.Body)
		var b hookBody
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Errorf("receiver: a body that is not a delivery: %q", raw)
		}
		if req.Header.Get("X-Braid-Alert-Id") != b.ID {
			t.Errorf("receiver: X-Braid-Alert-Id %q for a body of id %q", req.Header.Get("X-Braid-Alert-Id"), b.ID)
		}
		sig := req.Header.Get("X-Braid-Signature")
		m := hmac.New(sha256.New, []byte(hookSecret))
		m.Write(raw)
		h := hook{path: req.URL.Path, body: b, signed: sig != "", sigOK: sig == "sha256="+hex.EncodeToString(m.Sum(nil)), status: 200}
		r.mu.Lock()
		if r.failing[req.URL.Path] {
			h.status = 500
		}
		r.got = append(r.got, h)
		r.mu.Unlock()
		w.WriteHeader(h.status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setFailing(path string, failing bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing[path] = failing
}

// hooks returns what the receiver took on path so far for an alert.
func (r *receiver) hooks(path, alert string) []hook {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []hook
	for _, h := range r.got {
		if h.path == path && h.body.Alert == alert {
			out = append(out, h)
		}
	}
	return out
}

// ids are the distinct ids of hooks (answered status, or any when 0).
func ids(hs []hook, status int) map[string]int {
	out := map[string]int{}
	for _, h := range hs {
		if status == 0 || h.status == status {
			out[h.body.ID]++
		}
	}
	return out
}

// sensorCatalog: a stream of temperature readings, its 10-second view per
// site, and the alerts given as YAML.
func sensorCatalog(alerts string) testenv.Catalog {
	c := testenv.Fast()
	c.Streams = []testenv.Stream{{Name: "sensors", Time: "ts", Lateness: "5s",
		Fields: []string{"ts: time", "site: string", "temp: float"}, Required: []string{"ts", "site", "temp"}}}
	c.Views = []testenv.View{{Name: "temps", Stream: "sensors", Window: "10s", GroupBy: []string{"site"},
		Measures: []string{"readings: count()", "max_temp: max(temp)", "avg_temp: avg(temp)"}}}
	c.Extra = "alerts:\n" + alerts
	return c
}

// reading is one event the test sent.
type reading struct {
	ts   time.Time
	site string
	temp float64
}

func (r reading) json() string {
	return fmt.Sprintf(`{"ts":%q,"site":%q,"temp":%v}`, r.ts.UTC().Format(time.RFC3339Nano), r.site, r.temp)
}

// sendReadings posts readings to a stream and fails unless every one was
// accepted.
func sendReadings(t *testing.T, base, stream string, rs []reading) {
	t.Helper()
	var lines []string
	for _, r := range rs {
		lines = append(lines, r.json())
	}
	var resp ingestResp
	if code := httpJSON(t, "POST", base+"/v1/streams/"+stream+"/events", "application/x-ndjson", []byte(strings.Join(lines, "\n")), &resp); code != 200 || resp.Accepted != len(rs) {
		t.Fatalf("ingest into %s: status %d, %+v", stream, code, resp)
	}
}

// streamReadings sends readings stamped now to base() for d: every
// 250 ms a few, at random sites, mostly mild, now and then above 80 (or
// exactly 80, which does not cross "max_temp > 80"). It returns what it
// sent.
func streamReadings(t *testing.T, rng *rand.Rand, base func() string, d time.Duration) []reading {
	t.Helper()
	var sent []reading
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		var batch []reading
		for range 6 {
			r := reading{ts: time.Now(), site: []string{"a", "b", "c", "d"}[rng.IntN(4)], temp: math.Round((40+10*rng.NormFloat64())*100) / 100}
			switch x := rng.Float64(); {
			case x < 0.012:
				r.temp = math.Round((81+18*rng.Float64())*100) / 100
			case x < 0.02:
				r.temp = 80
			}
			batch = append(batch, r)
		}
		sendReadings(t, base(), "sensors", batch)
		sent = append(sent, batch...)
	}
	return sent
}

// crossing is a (window, site) row and its largest temperature.
type crossing struct {
	window time.Time
	site   string
	max    float64
}

// expectCrossings evaluates max_temp > 80 on the 10-second windows of
// the readings: the rows that cross, by their firing id of alert.
func expectCrossings(alert string, rs []reading) map[string]crossing {
	rows := map[string]crossing{}
	for _, r := range rs {
		w := r.ts.UTC().Truncate(10 * time.Second)
		k := w.Format(time.RFC3339Nano) + "/" + r.site
		c, ok := rows[k]
		if !ok || r.temp > c.max {
			rows[k] = crossing{window: w, site: r.site, max: r.temp}
		}
	}
	out := map[string]crossing{}
	for _, c := range rows {
		if c.max > 80 {
			out[fmt.Sprintf("%s/%s/%s/firing", alert, c.window.Format(time.RFC3339Nano), c.site)] = c
		}
	}
	return out
}

// alertsStatus is GET /v1/alerts.
type alertsStatus struct {
	Alerts []struct {
		Name      string `json:"name"`
		Evaluator string `json:"evaluator"`
		Firing    []struct {
			ID    string `json:"id"`
			Final bool   `json:"final"`
		} `json:"firing"`
		Recent []struct {
			ID      string `json:"id"`
			Outcome string `json:"outcome"`
		} `json:"recent_deliveries"`
		DeadLetters uint64 `json:"dead_letters"`
	} `json:"alerts"`
}

func getAlerts(t *testing.T, base string) alertsStatus {
	t.Helper()
	var st alertsStatus
	if code := httpJSON(t, "GET", base+"/v1/alerts", "", nil, &st); code != 200 {
		t.Fatalf("GET /v1/alerts: %d", code)
	}
	return st
}

// sameIDs describes how got differs from want ("" when they are equal).
func sameIDs[V, W any](got map[string]V, want map[string]W) string {
	var missing, extra []string
	for id := range want {
		if _, ok := got[id]; !ok {
			missing = append(missing, id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			extra = append(extra, id)
		}
	}
	if len(missing)+len(extra) == 0 {
		return ""
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return fmt.Sprintf("missing %v, not expected %v", missing, extra)
}

// TestAlertsCrossings: over random readings, every row that crosses
// max_temp > 80 fires once (a signed webhook, each signature valid), and
// none that did not; on: final fires the same rows once their windows are
// final, on a NATS subject; a receiver that keeps failing gets each
// delivery action.attempts times, then it waits in the alert's dead-letter
// queue until a replay delivers it with the same id; a row whose average
// drops back is resolved.
func TestAlertsCrossings(t *testing.T) {
	rcv := newReceiver(t)
	alerts := fmt.Sprintf(`  overheat:
    view: temps
    when: "max_temp > 80"
    action: { webhook: %q, secret_env: %s }
  overheat_final:
    view: temps
    when: "max_temp > 80"
    on: final
    action: { nats: "test.alerts.final" }
  flaky:
    view: temps
    when: "max_temp > 80"
    action: { webhook: %q, attempts: 3, backoff: 100ms, timeout: 2s }
  cooled:
    view: probe_avg
    when: "avg_temp > 50"
    action: { webhook: %q, secret_env: %s }
`, rcv.srv.URL+"/hook", hookSecretEnv, rcv.srv.URL+"/flaky", rcv.srv.URL+"/hook", hookSecretEnv)
	c := sensorCatalog(alerts)
	c.Streams = append(c.Streams, testenv.Stream{Name: "probes", Time: "ts", Lateness: "1m",
		Fields: []string{"ts: time", "site: string", "temp: float"}, Required: []string{"ts", "site", "temp"}})
	c.Views = append(c.Views, testenv.View{Name: "probe_avg", Stream: "probes", Window: "1m", GroupBy: []string{"site"},
		Measures: []string{"avg_temp: avg(temp)"}})
	st := testenv.NewStack(t, c.YAML(), testenv.WithNATS())
	nc, _ := st.NATS.JetStream(t)
	var natsMu sync.Mutex
	natsGot := map[string]int{}
	sub, err := nc.Subscribe("test.alerts.final", func(m *nats.Msg) {
		var b hookBody
		if err := json.Unmarshal(m.Data, &b); err != nil || b.ID != m.Header.Get("Nats-Msg-Id") || !b.Final || b.State != "firing" {
			t.Errorf("NATS delivery %q (Nats-Msg-Id %q): %v", m.Data, m.Header.Get("Nats-Msg-Id"), err)
		}
		natsMu.Lock()
		natsGot[b.ID]++
		natsMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	rcv.setFailing("/flaky", true)
	p := testenv.StartBraidEnv(t, st.Base, append(st.Env(), hookSecretEnv+"="+hookSecret), "up", "--config", st.Config)
	_ = p
	st.WaitViewsReady()
	base := st.Base

	// Resolved: a probe site's average goes above 50, then drops back.
	probeAt := time.Now().UTC()
	if w := probeAt.Truncate(time.Minute); probeAt.Sub(w) > 40*time.Second {
		probeAt = w.Add(time.Minute + time.Second) // within max_future: the same window for every probe
	}
	sendReadings(t, base, "probes", []reading{{probeAt, "r", 90}})
	cooledID := "cooled/" + probeAt.Truncate(time.Minute).Format(time.RFC3339Nano) + "/r/"
	eventually(t, "cooled fires", 60*time.Second, func() string {
		if got := ids(rcv.hooks("/hook", "cooled"), 200); got[cooledID+"firing"] == 0 {
			return fmt.Sprintf("%v", got)
		}
		return ""
	})
	sendReadings(t, base, "probes", []reading{{probeAt, "r", 10}, {probeAt, "r", 10}, {probeAt, "r", 10}})
	eventually(t, "cooled resolves", 60*time.Second, func() string {
		if got := ids(rcv.hooks("/hook", "cooled"), 200); got[cooledID+"resolved"] == 0 {
			return fmt.Sprintf("%v", got)
		}
		return ""
	})
	for _, h := range rcv.hooks("/hook", "cooled") {
		if h.body.State == "resolved" && h.body.Values["avg_temp"] != 30.0 {
			t.Errorf("resolved with avg_temp %v, want 30", h.body.Values["avg_temp"])
		}
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	sent := streamReadings(t, rng, func() string { return base }, 25*time.Second)
	// Every window of the readings becomes final: one reading stamped
	// past the last window's end plus the allowed lateness.
	time.Sleep(16 * time.Second)
	flush := []reading{{time.Now(), "z", 0}}
	sendReadings(t, base, "sensors", flush)
	want := expectCrossings("overheat", sent)
	t.Logf("%d readings, %d rows crossed", len(sent), len(want))
	if len(want) == 0 {
		t.Log("no row crossed this time: the test checks that none fired")
	}

	eventually(t, "every crossing fires, and none that did not cross", 60*time.Second, func() string {
		return sameIDs(ids(rcv.hooks("/hook", "overheat"), 200), want)
	})
	for _, h := range rcv.hooks("/hook", "overheat") {
		c := want[h.body.ID]
		mx, _ := h.body.Values["max_temp"].(float64)
		if !h.signed || !h.sigOK || h.body.State != "firing" || h.body.Alert != "overheat" || h.body.View != "temps" ||
			h.body.WindowStart != c.window.Format(time.RFC3339Nano) || h.body.Group["site"] != c.site || !(mx > 80 && mx <= c.max) ||
			!h.body.Exact || h.body.At == "" {
			t.Errorf("delivery %+v (signed %v, signature valid %v) of row %+v", h.body, h.signed, h.sigOK, c)
		}
	}
	wantFinal := map[string]bool{}
	for id := range want {
		wantFinal[strings.Replace(id, "overheat/", "overheat_final/", 1)] = true
	}
	eventually(t, "on: final fires every crossing row once final, on NATS", 60*time.Second, func() string {
		natsMu.Lock()
		defer natsMu.Unlock()
		return sameIDs(maps.Clone(natsGot), wantFinal)
	})

	// The failing receiver: each delivery attempted 3 times, then kept.
	wantFlaky := map[string]bool{}
	for id := range want {
		wantFlaky[strings.Replace(id, "overheat/", "flaky/", 1)] = true
	}
	type dlq struct {
		DeadLetters []struct {
			ID       string          `json:"id"`
			Attempts int             `json:"attempts"`
			Error    string          `json:"error"`
			Body     json.RawMessage `json:"body"`
		} `json:"dead_letters"`
	}
	eventually(t, "flaky's deliveries in its dead-letter queue", 60*time.Second, func() string {
		var d dlq
		if code := httpJSON(t, "GET", base+"/v1/alerts/flaky/dlq", "", nil, &d); code != 200 {
			return fmt.Sprint("status ", code)
		}
		got := map[string]bool{}
		for _, l := range d.DeadLetters {
			got[l.ID] = true
			if l.Attempts != 3 || !strings.Contains(l.Error, "500") || !bytes.Contains(l.Body, []byte(l.ID)) {
				return fmt.Sprintf("dead letter %+v", l)
			}
		}
		return sameIDs(got, wantFlaky)
	})
	for id, n := range ids(rcv.hooks("/flaky", "flaky"), 500) {
		if n < 3 {
			t.Errorf("%s attempted %d times before its dead letter, want 3", id, n)
		}
	}
	if got := ids(rcv.hooks("/flaky", "flaky"), 200); len(got) != 0 {
		t.Fatalf("deliveries to a failing receiver succeeded: %v", got)
	}
	for _, a := range getAlerts(t, base).Alerts {
		if a.Name == "flaky" && a.DeadLetters != uint64(len(wantFlaky)) {
			t.Errorf("GET /v1/alerts: flaky has %d dead letters, want %d", a.DeadLetters, len(wantFlaky))
		}
	}
	rcv.setFailing("/flaky", false)
	var rep struct {
		Replayed int `json:"replayed"`
	}
	if code := httpJSON(t, "POST", base+"/v1/alerts/flaky/dlq/replay", "", nil, &rep); code != 200 || rep.Replayed != len(wantFlaky) {
		t.Fatalf("replay: %d %+v, want %d replayed", code, rep, len(wantFlaky))
	}
	eventually(t, "the replay delivers every dead letter, same ids", 60*time.Second, func() string {
		return sameIDs(ids(rcv.hooks("/flaky", "flaky"), 200), wantFlaky)
	})
	var after dlq
	if code := httpJSON(t, "GET", base+"/v1/alerts/flaky/dlq", "", nil, &after); code != 200 || len(after.DeadLetters) != 0 {
		t.Fatalf("dead letters after the replay: %d %+v", code, after)
	}
	if code := httpJSON(t, "GET", base+"/v1/alerts/nope/dlq", "", nil, nil); code != 404 {
		t.Errorf("an unknown alert's dead letters: %d, want 404", code)
	}

	// Nothing else came, and the figures agree.
	for _, h := range rcv.hooks("/hook", "overheat") {
		if h.body.State != "firing" {
			t.Errorf("overheat sent %s (%s): max_temp never drops back", h.body.State, h.body.ID)
		}
	}
	m := metricsText(t, base)
	if v, _ := metricValue(m, `braid_alert_firings_total{alert="overheat",state="firing"}`); v != float64(len(want)) {
		t.Errorf("braid_alert_firings_total of overheat firing: %v, want %d", v, len(want))
	}
	if v, _ := metricValue(m, `braid_alert_deliveries_total{alert="flaky",outcome="dead"}`); v != float64(len(want)) {
		t.Errorf("braid_alert_deliveries_total of flaky dead: %v, want %d", v, len(want))
	}
	if len(want) > 0 {
		if v, _ := metricValue(m, `braid_alert_delivery_seconds_count{alert="overheat",since="decision"}`); v < float64(len(want)) {
			t.Errorf("braid_alert_delivery_seconds_count of overheat: %v, want at least %d", v, len(want))
		}
	}
}

// alertBatchRun runs a batch now and returns its version.
func alertBatchRun(t *testing.T, base string) string {
	t.Helper()
	var run struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	}
	if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run.Status != "succeeded" || run.Version == "" {
		t.Fatalf("batch run: %d %+v", code, run)
	}
	return run.Version
}

// TestAlertsCorrected: a window that fired and is final takes a reading
// too late for the speed layer; the batch run that counts it changes the
// window's values, and the alert says so once: corrected, its id carrying
// the run's version, its values the new ones. A batch run that changes
// nothing corrects nothing.
func TestAlertsCorrected(t *testing.T) {
	rcv := newReceiver(t)
	c := sensorCatalog(fmt.Sprintf(`  overheat:
    view: temps
    when: "max_temp > 80"
    action: { webhook: %q, secret_env: %s }
`, rcv.srv.URL+"/hook", hookSecretEnv))
	st := testenv.NewStack(t, c.YAML())
	testenv.StartBraidEnv(t, st.Base, append(st.Env(), hookSecretEnv+"="+hookSecret), "up", "--config", st.Config)
	st.WaitViewsReady()
	base := st.Base

	now := time.Now().UTC()
	w := now.Truncate(10 * time.Second)
	if now.Sub(w) > 5*time.Second { // room in the window for the readings below
		w = w.Add(10 * time.Second)
		time.Sleep(time.Until(w.Add(200 * time.Millisecond)))
	}
	sendReadings(t, base, "sensors", []reading{{time.Now(), "x", 70}, {time.Now(), "x", 85}})
	prefix := "overheat/" + w.Format(time.RFC3339Nano) + "/x/"
	eventually(t, "the window fires", 60*time.Second, func() string {
		if got := ids(rcv.hooks("/hook", "overheat"), 200); got[prefix+"firing"] == 0 {
			return fmt.Sprintf("%v", got)
		}
		return ""
	})
	// The window becomes final: a reading past its end plus the lateness.
	time.Sleep(time.Until(w.Add(15*time.Second + 500*time.Millisecond)))
	sendReadings(t, base, "sensors", []reading{{time.Now(), "y", 20}})
	eventually(t, "the firing row is final", 60*time.Second, func() string {
		for _, a := range getAlerts(t, base).Alerts {
			for _, f := range a.Firing {
				if f.ID == prefix+"firing" && f.Final {
					return ""
				}
			}
		}
		return "not yet"
	})
	alertBatchRun(t, base) // changes nothing of the window
	// Too late for the speed layer: behind the watermark.
	sendReadings(t, base, "sensors", []reading{{w.Add(3 * time.Second), "x", 99}})
	version := alertBatchRun(t, base)
	corrected := prefix + "corrected/" + version
	eventually(t, "the batch run's correction", 60*time.Second, func() string {
		if got := ids(rcv.hooks("/hook", "overheat"), 200); got[corrected] == 0 {
			return fmt.Sprintf("%v", got)
		}
		return ""
	})
	alertBatchRun(t, base) // changes nothing more
	time.Sleep(3 * time.Second)
	got := ids(rcv.hooks("/hook", "overheat"), 200)
	if want := map[string]bool{prefix + "firing": true, corrected: true}; sameIDs(got, want) != "" {
		t.Fatalf("deliveries: %s", sameIDs(got, want))
	}
	for _, h := range rcv.hooks("/hook", "overheat") {
		b := h.body
		switch b.State {
		case "firing":
			if b.Values["max_temp"] != 85.0 || b.Values["readings"] != 2.0 || b.Final {
				t.Errorf("firing %+v", b)
			}
		case "corrected":
			if b.Values["max_temp"] != 99.0 || b.Values["readings"] != 3.0 || b.Values["avg_temp"] != (70.0+85+99)/3 || !b.Final ||
				!strings.HasPrefix(b.Source, "batch") || !h.sigOK {
				t.Errorf("corrected %+v (signature valid %v)", b, h.sigOK)
			}
		}
	}
}

// procOwns reports whether the alerts' evaluator named owner (host, pid,
// suffix) is process p.
func procOwns(p *testenv.Proc, owner string) bool {
	return strings.Contains(owner, fmt.Sprintf("-%d-", p.Cmd.Process.Pid))
}

// TestAlertsFailover: two braid serve processes share the alerts (one
// evaluates), beside braid speed and braid archive. While readings
// stream, the evaluating one is killed with -9 (the other takes the
// alert over), started again, and later stopped and started again. The
// receiver sees every crossing's id at least once, and no other id.
func TestAlertsFailover(t *testing.T) {
	rcv := newReceiver(t)
	c := sensorCatalog(fmt.Sprintf(`  overheat:
    view: temps
    when: "max_temp > 80"
    action: { webhook: %q, secret_env: %s, timeout: 2s }
`, rcv.srv.URL+"/hook", hookSecretEnv))
	st := testenv.NewStack(t, c.YAML(), testenv.WithNATS())
	tw := st.Twin()
	env := append(st.Env(), hookSecretEnv+"="+hookSecret)
	start := func(s *testenv.Stack) *testenv.Proc {
		return testenv.StartBraidEnv(t, s.Base, env, "serve", "--config", s.Config)
	}
	testenv.StartBraidEnv(t, "", env, "speed", "--config", st.Config)
	testenv.StartBraidEnv(t, "", env, "archive", "--config", st.Config)
	serves := []*testenv.Proc{start(st), start(tw)}
	stacks := []*testenv.Stack{st, tw}
	st.WaitViewsReady()
	// evaluator is the index of the serve process evaluating the alert.
	evaluator := func() int {
		i := -1
		eventually(t, "an evaluator", 60*time.Second, func() string {
			for _, base := range []string{st.Base, tw.Base} {
				resp, err := http.Get(base + "/v1/alerts")
				if err != nil {
					continue
				}
				var s alertsStatus
				_ = json.NewDecoder(resp.Body).Decode(&s)
				resp.Body.Close()
				if len(s.Alerts) == 1 {
					for j, p := range serves {
						if procOwns(p, s.Alerts[0].Evaluator) {
							i = j
							return ""
						}
					}
				}
			}
			return "no process named as evaluating"
		})
		return i
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	var sent []reading
	stream := func(to int, d time.Duration) {
		sent = append(sent, streamReadings(t, rng, func() string { return stacks[to].Base }, d)...)
	}

	e := evaluator()
	stream(1-e, 8*time.Second)
	serves[e].Kill(t)
	t.Logf("kill -9 of serve %d, the evaluator", e)
	stream(1-e, 8*time.Second)
	serves[e] = start(stacks[e])
	stream(1-e, 6*time.Second)
	e = evaluator()
	if err := serves[e].Stop(t); err != nil {
		t.Errorf("SIGTERM of serve %d: %v", e, err)
	}
	t.Logf("SIGTERM of serve %d, the evaluator", e)
	stream(1-e, 6*time.Second)
	serves[e] = start(stacks[e])
	stream(1-e, 6*time.Second)
	time.Sleep(16 * time.Second)
	sendReadings(t, stacks[1-e].Base, "sensors", []reading{{time.Now(), "z", 0}})

	want := expectCrossings("overheat", sent)
	t.Logf("%d readings, %d rows crossed", len(sent), len(want))
	eventually(t, "every crossing delivered at least once, nothing else", 90*time.Second, func() string {
		return sameIDs(ids(rcv.hooks("/hook", "overheat"), 200), want)
	})
	dups := 0
	for _, n := range ids(rcv.hooks("/hook", "overheat"), 200) {
		dups += n - 1
	}
	t.Logf("%d deliveries repeated an id", dups)
	for _, h := range rcv.hooks("/hook", "overheat") {
		if !h.sigOK || h.body.State != "firing" {
			t.Errorf("delivery %+v, signature valid %v", h.body, h.sigOK)
		}
	}
}
