package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/braid-data/braid/tests/testenv"
)

// dashToken is the API token of the dashboard test (auth is on, so the page
// must first ask for it).
const dashToken = "dashboard-test-token-5d1c"

func dashCatalog() testenv.Catalog {
	sum := sha256.Sum256([]byte(dashToken))
	c := testenv.Fast()
	c.Extra = "auth:\n  keys:\n    - { name: wall, sha256: \"" + hex.EncodeToString(sum[:]) + "\", scopes: [\"admin\"] }\n"
	orders := testenv.Orders().Without("email")
	orders.Lateness = "2m"
	byCountry := testenv.OrdersByCountry().Without("basket_avg", "smallest", "items")
	total := testenv.View{Name: "orders_total", Stream: "orders", Window: "1m", Measures: []string{"orders: count()", "revenue: sum(amount)"}}
	c.Streams = []testenv.Stream{orders}
	c.Views = []testenv.View{byCountry, total}
	return c
}

// chromiumPath finds the browser: $BRAID_CHROMIUM, /usr/bin/chromium, or
// chromium / chromium-browser / google-chrome on the PATH.
func chromiumPath() (string, error) {
	if p := os.Getenv("BRAID_CHROMIUM"); p != "" {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium found (looked at $BRAID_CHROMIUM, /usr/bin/chromium and chromium, chromium-browser, google-chrome on the PATH)")
}

// dashOrder is one posted event, kept for the independent computation.
type dashOrder struct {
	TS      string  `json:"ts"`
	ID      string  `json:"order_id"`
	Country string  `json:"country"`
	Amount  float64 `json:"amount"`
	Items   int     `json:"items"`
}

// chartData is what the page exposes on a chart's <svg> element.
type chartData struct {
	View, Measure, Loaded, Rows, Points, Total, Latest, Cutoff, Watermark, Groups, Live string
	Zones                                                                               int
}

func TestDashboard(t *testing.T) {
	chromium, err := chromiumPath()
	if err != nil {
		t.Fatalf("the dashboard test needs a headless Chromium: %v. Install it (Debian/Ubuntu: apt-get install -y chromium) or set BRAID_CHROMIUM; scripts/provision (make test) installs it.", err)
	}

	base := testenv.Up(t, dashCatalog().YAML()).Base

	// The dashboard is served at / without a token (the page asks for one).
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / answered %d %q: the dashboard is not mounted at / (serving.Options.Root = dashboard.Handler())", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	liveAvailable := probeLive(t, base)

	// A real headless Chromium.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelCtx()

	// Console errors and uncaught exceptions fail the test. Network errors
	// (a 401 before the token is entered, a 404 from a missing /live
	// endpoint) are logged only: they are answers of the API, not page bugs.
	var mu sync.Mutex
	var problems []string
	consoleDone := make(chan struct{})
	msgs := chromedp.Console(ctx)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	go func() {
		defer close(consoleDone)
		for m, err := range msgs {
			if err != nil {
				return
			}
			switch {
			case m.IsException(), m.Type == chromedp.ConsoleError && m.Source != "network":
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			case m.Type == chromedp.ConsoleError, m.Type == chromedp.ConsoleWarning:
				t.Logf("browser %s [%s]: %s", m.Type, m.Source, m.Text)
			}
		}
	}()
	checkConsole := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(problems) > 0 {
			t.Fatalf("console errors or exceptions %s:\n%s", when, strings.Join(problems, "\n"))
		}
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("navigate: %v", err)
	}

	// Auth is on: the page must ask for a token, then use it.
	waitPage(t, ctx, "the token prompt", 30*time.Second, `document.getElementById('auth').hidden ? 'token input hidden' : ''`)
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#auth-token"), dashToken),
		chromedp.Click(chromedp.CSS(`#auth-form button[type=submit]`)),
	); err != nil {
		t.Fatalf("enter token: %v", err)
	}
	waitPage(t, ctx, "the token to be accepted and the charts to load", 60*time.Second, `(() => {
		if (!document.getElementById('auth').hidden) return 'token prompt still shown';
		if (localStorage.getItem('braid.token') !== `+strconv.Quote(dashToken)+`) return 'token not stored';
		for (const v of ['orders_by_country', 'orders_total']) {
			const s = document.querySelector('svg.chart-svg[data-view="' + v + '"]');
			if (!s) return 'no chart for ' + v;
			if (s.dataset.loaded !== 'true') return v + ' not loaded';
		}
		return '';
	})()`)
	d := readChart(t, ctx, "orders_by_country")
	if d.Total != "0" || d.Rows != "0" {
		t.Fatalf("empty platform: chart shows total %q rows %q, want 0", d.Total, d.Rows)
	}
	checkConsole("after loading")

	// Phase 1: events of the last 8 minutes (ascending, so none is too late)
	// and one malformed event (a dead letter); then one too-late event outside
	// the chart's 15 minutes (late counter, not in the speed layer).
	rng := rand.New(rand.NewPCG(7, 11))
	now := time.Now().UTC()
	countries := []string{"DE", "DE", "DE", "FR", "FR", "US", "US", "GB", "JP", "IT", "ES"}
	var orders []dashOrder
	for i := range 300 {
		ts := now.Add(-8 * time.Minute).Add(time.Duration(i) * 8 * time.Minute / 300)
		orders = append(orders, dashOrder{TS: ts.Format(time.RFC3339Nano), ID: fmt.Sprintf("d-%d", i), Country: countries[rng.IntN(len(countries))],
			Amount: math.Round(rng.Float64()*10000) / 100, Items: 1 + rng.IntN(3)})
	}
	body := dashNDJSON(orders)
	body = append(body, `{"ts":"not a time","order_id":"bad-1","country":"DE","amount":1}`+"\n"...)
	r := dashPost(t, base, body)
	if r.Accepted != 300 || r.Rejected != 1 {
		t.Fatalf("ingest: accepted %d rejected %d (%+v), want 300 and 1", r.Accepted, r.Rejected, r.Errors)
	}
	want := dashExpect(orders)
	waitChart(t, ctx, "orders_by_country", "the chart to show the 300 events (speed layer)", want, "orders")
	waitChart(t, ctx, "orders_total", "the total chart to show the 300 events", dashExpectTotal(orders), "orders")
	// Now that the watermark has moved on, an event 40 minutes old is too late.
	late := dashOrder{TS: now.Add(-40 * time.Minute).Format(time.RFC3339Nano), ID: "late-1", Country: "DE", Amount: 5, Items: 1}
	if r := dashPost(t, base, dashNDJSON([]dashOrder{late})); r.Accepted != 1 {
		t.Fatalf("late event: %+v", r)
	}
	waitPage(t, ctx, "the status strip (dead letters 1, late 1, accepted 301)", 60*time.Second, `(() => {
		const k = (n) => (document.querySelector('[data-k="' + n + '"]') || {}).textContent || '';
		if (k('dlq') !== '1') return 'dead letters shows ' + k('dlq');
		if (k('late') !== '1') return 'late shows ' + k('late');
		if (k('accepted') !== '301 accepted') return 'accepted shows ' + k('accepted');
		if (!/^[0-9.,]+[KMB]?$/.test(k('rate'))) return 'ingest rate shows ' + k('rate');
		return '';
	})()`)
	checkConsole("after the first events")

	// The partition table of the stream: a row per partition, with the
	// owner /v1/status names, the speed layer at the log's end (position
	// = the partition's last record, no lag) and a watermark.
	var status struct {
		Streams map[string]struct {
			Partitions []struct {
				Partition int     `json:"partition"`
				Owner     *string `json:"owner"`
				LastSeq   *uint64 `json:"last_seq"`
			} `json:"partitions"`
		} `json:"streams"`
	}
	if code := dashHTTP(t, "GET", base+"/v1/status", "", &status); code != 200 {
		t.Fatalf("status: %d", code)
	}
	type wantPart struct {
		Partition int    `json:"partition"`
		Owner     string `json:"owner"`
		Position  string `json:"position"`
	}
	var wantParts []wantPart
	for _, p := range status.Streams["orders"].Partitions {
		if p.Owner == nil || p.LastSeq == nil {
			t.Fatalf("status of partition %d: owner %v, last_seq %v", p.Partition, p.Owner, p.LastSeq)
		}
		wantParts = append(wantParts, wantPart{p.Partition, *p.Owner, strconv.FormatUint(*p.LastSeq, 10)})
	}
	if len(wantParts) == 0 {
		t.Fatal("status lists no partition of orders")
	}
	wantJSON, _ := json.Marshal(wantParts)
	waitPage(t, ctx, "the partition table of orders", 60*time.Second, `(() => {
		const want = `+string(wantJSON)+`;
		const t = document.querySelector('#partitions table.parts[data-stream="orders"]');
		if (!t) return 'no partition table for orders';
		const rows = t.tBodies[0].rows;
		if (rows.length !== want.length) return rows.length + ' rows, want ' + want.length;
		for (let i = 0; i < want.length; i++) {
			const c = [...rows[i].cells].map((td) => td.textContent);
			if (c[0] !== String(want[i].partition)) return 'row ' + i + ' is partition ' + c[0];
			if (c[1] !== want[i].owner) return 'partition ' + i + ' owner ' + c[1] + ', want ' + want[i].owner;
			if (c[2] !== want[i].position) return 'partition ' + i + ' position ' + c[2] + ', want ' + want[i].position;
			if (c[3] !== '0') return 'partition ' + i + ' lag ' + c[3];
			if (!/^\d\d:\d\d:\d\d$/.test(c[4])) return 'partition ' + i + ' watermark ' + c[4];
		}
		return '';
	})()`)

	// The views table: each view's tier, state, freshness and Redis cost.
	waitPage(t, ctx, "the views' tiers and costs", 60*time.Second, `(() => {
		for (const v of ['orders_by_country', 'orders_total']) {
			const tr = document.querySelector('#tiers tr[data-view="' + v + '"]');
			if (!tr) return 'no row for ' + v;
			const c = [...tr.cells].map((td) => td.textContent);
			if (c[1] !== 'live' || c[2] !== 'ready') return v + ': tier ' + c[1] + ', state ' + c[2];
			if (!/^\d/.test(c[3])) return v + ': freshness ' + c[3];
			if (!/^[\d,.]+$/.test(c[4]) || !/\d+(\.\d)? (B|KiB|MiB)$/.test(c[6])) return v + ': cost ' + c[4] + ' cells, ' + c[6];
		}
		return '';
	})()`)

	// The measure selector switches the chart to revenue (a float sum).
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS(`section.chart[data-view="orders_by_country"] select`), "revenue"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('section.chart[data-view="orders_by_country"] select').dispatchEvent(new Event('change'))`)); err != nil {
		t.Fatalf("select revenue: %v", err)
	}
	waitChart(t, ctx, "orders_by_country", "the revenue chart", want, "revenue")
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS(`section.chart[data-view="orders_by_country"] select`), "orders"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('section.chart[data-view="orders_by_country"] select').dispatchEvent(new Event('change'))`)); err != nil {
		t.Fatalf("select orders: %v", err)
	}

	// Phase 2: a batch run; the chart gets its cutoff line and batch zone,
	// the header lists the run.
	eventually(t, "a successful batch run", 90*time.Second, func() string {
		var run map[string]any
		code := dashHTTP(t, "POST", base+"/v1/batch/runs?wait=true", `{}`, &run)
		if code != 200 || run["status"] != "succeeded" {
			return fmt.Sprintf("batch run: %d %v", code, run)
		}
		return ""
	})
	waitPage(t, ctx, "the batch cutoff and the run on the page", 60*time.Second, `(() => {
		const s = document.querySelector('svg.chart-svg[data-view="orders_by_country"]');
		if (!s.dataset.cutoff) return 'no cutoff on the chart';
		if (!s.querySelector('rect.zone-batch')) return 'no batch zone drawn';
		if (!s.querySelector('line.cutoff')) return 'no cutoff line drawn';
		if (!document.querySelector('#runs li.succeeded')) return 'no succeeded run listed';
		const c = document.querySelector('[data-k="cutoff"]').textContent;
		if (!/^\d\d:\d\d:\d\d$/.test(c)) return 'cutoff tile shows ' + c;
		return '';
	})()`)

	// Phase 3: events with the current time after the cutoff: the chart
	// (batch ⊕ speed) must move to the new exact totals.
	now = time.Now().UTC()
	var more []dashOrder
	for i := range 40 {
		more = append(more, dashOrder{TS: now.Add(-time.Duration(40-i) * 250 * time.Millisecond).Format(time.RFC3339Nano), ID: fmt.Sprintf("m-%d", i),
			Country: countries[rng.IntN(len(countries))], Amount: math.Round(rng.Float64()*10000) / 100, Items: 1})
	}
	if r := dashPost(t, base, dashNDJSON(more)); r.Accepted != 40 {
		t.Fatalf("phase 3 ingest: %+v", r)
	}
	all := append(append([]dashOrder{}, orders...), more...)
	want = dashExpect(all)
	d = waitChart(t, ctx, "orders_by_country", "the chart to add the 40 new events on top of the batch", want, "orders")
	waitChart(t, ctx, "orders_total", "the total chart to add the 40 new events", dashExpectTotal(all), "orders")
	if liveAvailable {
		waitPage(t, ctx, "the live (SSE) subscription", 60*time.Second, `document.querySelector('svg.chart-svg[data-view="orders_by_country"]').dataset.live === 'true' ? '' : 'not live'`)
	} else {
		t.Logf("GET /v1/views/{view}/live is not an event stream here: the page refreshed by queries")
	}
	t.Logf("chart: %d rows, total %s, latest window %s, cutoff %s, watermark %q, live %s", len(want.rows), d.Total, d.Latest, d.Cutoff, d.Watermark, d.Live)
	checkConsole("at the end")

	// Screenshot for the README (1280x800 PNG) and the artifacts.
	time.Sleep(500 * time.Millisecond)
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// The README's copy (docs/dashboard.png) is rewritten only on request
	// (BRAID_UPDATE_SCREENSHOT=1), so a test run leaves the work tree clean.
	root := testenv.RepoRoot(t)
	paths := []string{filepath.Join(root, "tests", "artifacts", "dashboard.png")}
	if os.Getenv("BRAID_UPDATE_SCREENSHOT") == "1" {
		paths = append(paths, filepath.Join(root, "docs", "dashboard.png"))
	}
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s (%d bytes)", strings.Join(paths, ", "), len(png))
	cancelCtx()
	<-consoleDone
	checkConsole("at the end")
}

// dashWant is the independent computation of a chart's figures.
type dashWant struct {
	rows   map[string]bool // window|group
	count  float64
	amount float64
}

func dashExpect(orders []dashOrder) dashWant {
	w := dashWant{rows: map[string]bool{}}
	for _, o := range orders {
		ts, _ := time.Parse(time.RFC3339Nano, o.TS)
		w.rows[ts.Truncate(time.Minute).Format(time.RFC3339)+"|"+o.Country] = true
		w.count++
		w.amount += o.Amount
	}
	return w
}

func dashExpectTotal(orders []dashOrder) dashWant {
	w := dashExpect(orders)
	rows := map[string]bool{}
	for k := range w.rows {
		rows[strings.SplitN(k, "|", 2)[0]] = true
	}
	w.rows = rows
	return w
}

// waitChart waits until the chart of view shows exactly the expected rows and
// total of the measure ("orders" = count, "revenue" = sum of amounts).
func waitChart(t *testing.T, ctx context.Context, view, what string, want dashWant, measure string) chartData {
	t.Helper()
	total := want.count
	if measure == "revenue" {
		total = want.amount
	}
	var last chartData
	eventually(t, what, 60*time.Second, func() string {
		last = readChart(t, ctx, view)
		if last.Measure != measure {
			return "measure " + last.Measure
		}
		if last.Rows != strconv.Itoa(len(want.rows)) {
			return fmt.Sprintf("rows %s, want %d", last.Rows, len(want.rows))
		}
		got, err := strconv.ParseFloat(last.Total, 64)
		if err != nil || math.Abs(got-total) > 1e-6*math.Max(1, total) {
			return fmt.Sprintf("total %q, want %v", last.Total, total)
		}
		return ""
	})
	return last
}

func readChart(t *testing.T, ctx context.Context, view string) chartData {
	t.Helper()
	js := `(() => {
		const s = document.querySelector('svg.chart-svg[data-view=` + strconv.Quote(view) + `]');
		if (!s) return '{}';
		const d = s.dataset;
		return JSON.stringify({View: d.view, Measure: d.measure, Loaded: d.loaded, Rows: d.rows, Points: d.points, Total: d.total, Latest: d.latest,
			Cutoff: d.cutoff, Watermark: d.watermark, Groups: d.groups, Live: d.live, Zones: s.querySelectorAll('rect.zone-batch, rect.zone-speed').length});
	})()`
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		t.Fatalf("read chart %s: %v", view, err)
	}
	var d chartData
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		t.Fatalf("read chart %s: %v (%s)", view, err, s)
	}
	return d
}

// waitPage polls a JS expression that yields "" when the page is as wanted,
// else what is still missing.
func waitPage(t *testing.T, ctx context.Context, what string, timeout time.Duration, expr string) {
	t.Helper()
	eventually(t, what, timeout, func() string {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			return "evaluate: " + err.Error()
		}
		return s
	})
}

// probeLive reports whether the API serves the live stream (200 with
// text/event-stream).
func probeLive(t *testing.T, base string) bool {
	t.Helper()
	from := time.Now().UTC().Truncate(time.Minute).Add(-time.Minute)
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/views/orders_by_country/live?from=%s&to=%s", base, from.Format(time.RFC3339), from.Add(5*time.Minute).Format(time.RFC3339)), nil)
	req.Header.Set("Authorization", "Bearer "+dashToken)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200 && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
}

func dashNDJSON(orders []dashOrder) []byte {
	var b []byte
	for _, o := range orders {
		j, _ := json.Marshal(o)
		b = append(append(b, j...), '\n')
	}
	return b
}

func dashPost(t *testing.T, base string, body []byte) ingestResp {
	t.Helper()
	var r ingestResp
	if code := dashHTTP(t, "POST", base+"/v1/streams/orders/events", string(body), &r); code != 200 {
		t.Fatalf("ingest: status %d", code)
	}
	return r
}

// dashHTTP is an authenticated JSON request.
func dashHTTP(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+dashToken)
	if method == "POST" && strings.Contains(url, "/events") {
		req.Header.Set("Content-Type", "application/x-ndjson")
	} else if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}
