package tests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/braid-data/braid/tests/testenv"
)

// TestAlertsDemoDashboard: braid up serves the demo's webhook receiver
// for an alert signing with BRAID_DEMO_HOOK_SECRET (and, the variable
// unset, uses the demo's secret); a crossing is delivered to it with a
// valid signature; the dashboard lists the alert, marks the firing on
// its view's chart, and shows what the receiver took.
func TestAlertsDemoDashboard(t *testing.T) {
	chromium, err := chromiumPath()
	if err != nil {
		t.Fatalf("the dashboard test needs a headless Chromium: %v (apt-get install -y chromium, or BRAID_CHROMIUM)", err)
	}
	c := sensorCatalog(`  overheat:
    view: temps
    when: "max_temp > 80"
    action: { webhook: "BASE/demo/hooks", secret_env: BRAID_DEMO_HOOK_SECRET }
`)
	st := testenv.NewStack(t, c.YAML())
	cfg, err := os.ReadFile(st.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.Config, []byte(strings.Replace(string(cfg), "BASE", st.Base, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range st.Env() {
		if !strings.HasPrefix(kv, "BRAID_DEMO_HOOK_SECRET=") {
			env = append(env, kv)
		}
	}
	testenv.StartBraidEnv(t, st.Base, env, "up", "--config", st.Config)
	st.WaitViewsReady()
	sendReadings(t, st.Base, "sensors", []reading{{time.Now(), "berlin", 20}, {time.Now(), "austin", 91.5}})
	var hooks struct {
		Received      int `json:"received"`
		BadSignatures int `json:"bad_signatures"`
		Deliveries    []struct {
			ID             string `json:"id"`
			SignatureValid bool   `json:"signature_valid"`
		} `json:"deliveries"`
	}
	eventually(t, "the demo receiver takes the delivery", 60*time.Second, func() string {
		if code := httpJSON(t, "GET", st.Base+"/demo/hooks", "", nil, &hooks); code != 200 {
			return fmt.Sprint("status ", code)
		}
		if hooks.Received < 1 {
			return "nothing received"
		}
		return ""
	})
	if hooks.BadSignatures != 0 || len(hooks.Deliveries) != 1 || !hooks.Deliveries[0].SignatureValid || !strings.HasSuffix(hooks.Deliveries[0].ID, "/austin/firing") {
		t.Fatalf("demo receiver: %+v", hooks)
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelCtx()
	var mu sync.Mutex
	var problems []string
	msgs := chromedp.Console(ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(st.Base+"/")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	waitPage(t, ctx, "the alert listed, its firing marked on the chart, the receiver shown", 60*time.Second, `(() => {
		const sec = document.getElementById('alerts');
		if (!sec || sec.hidden) return 'alerts section hidden';
		const row = sec.querySelector('tr[data-alert="overheat"]');
		if (!row) return 'no row for overheat';
		const s = document.querySelector('svg.chart-svg[data-view="temps"]');
		if (!s) return 'no chart for temps';
		if (!(+s.dataset.alertMarks >= 1)) return 'no alert marker on the chart (' + s.dataset.alertMarks + ')';
		const m = s.querySelector('.alert-mark.firing');
		if (!m || m.dataset.alert !== 'overheat') return 'marker without its alert';
		if (document.getElementById('alerts-demo').hidden) return 'demo receiver hidden';
		if (!document.querySelector('#alerts-demo-list li.ok')) return 'no delivery with a valid signature listed';
		return '';
	})()`)
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("console errors or exceptions: %v", problems)
	}
}
