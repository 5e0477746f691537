package logic

import (
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/defaults"
)

func alertView(t *testing.T, window, hop, lateness, maxFuture time.Duration) *View {
	t.Helper()
	s, err := NewStream("s", StreamDef{Time: "ts", Fields: map[string]FieldType{"ts": TypeTime, "site": TypeString, "temp": TypeFloat},
		AllowedLateness: lateness, MaxFuture: maxFuture}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewView("v", ViewDef{Window: window, Hop: hop, GroupBy: []string{"site"}, Measures: []MeasureDef{{Name: "max_temp", Expr: "max(temp)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAlertDelivery(t *testing.T) {
	v := alertView(t, time.Minute, 0, 0, 0)
	a, err := NewAlert("hot", AlertDef{When: "max_temp > 80", Webhook: "http://x/h"}, v)
	if err != nil {
		t.Fatal(err)
	}
	if a.Attempts != defaults.AlertAttempts || a.Backoff != defaults.AlertBackoff || a.Timeout != defaults.AlertTimeout {
		t.Fatalf("defaults: %+v", a)
	}
	a, err = NewAlert("hot", AlertDef{When: "max_temp > 80", Webhook: "http://x/h", Attempts: 4, Backoff: 100 * time.Millisecond, Timeout: time.Second}, v)
	if err != nil {
		t.Fatal(err)
	}
	// 100ms doubled per attempt, at most defaults.AlertMaxBackoff.
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 12: 204800 * time.Millisecond, 13: defaults.AlertMaxBackoff, 60: defaults.AlertMaxBackoff} {
		if got := a.RetryDelay(attempt); got != want {
			t.Errorf("RetryDelay(%d) = %v, want %v", attempt, got, want)
		}
	}
	for _, c := range []struct {
		def AlertDef
		key string
	}{
		{AlertDef{When: "max_temp > 80", Webhook: "http://x/h", Attempts: -1}, "action.attempts"},
		{AlertDef{When: "max_temp > 80", Webhook: "http://x/h", Attempts: 101}, "action.attempts"},
		{AlertDef{When: "max_temp > 80", Webhook: "http://x/h", Backoff: time.Millisecond}, "action.backoff"},
		{AlertDef{When: "max_temp > 80", Webhook: "http://x/h", Backoff: time.Hour}, "action.backoff"},
		{AlertDef{When: "max_temp > 80", Webhook: "http://x/h", Timeout: 10 * time.Millisecond}, "action.timeout"},
		{AlertDef{When: "max_temp > 80", Webhook: "http://x/h", Timeout: time.Hour}, "action.timeout"},
		{AlertDef{When: "max_temp > 80", NATS: "a.b", SecretEnv: "X"}, "action.secret_env"},
	} {
		errs := CheckAlert("hot", c.def, v)
		if len(errs) != 1 || errs[0].Key != c.key || !strings.HasPrefix(errs[0].Err.Error(), c.key+":") {
			t.Errorf("%+v: errors %v, want one at %s", c.def, errs, c.key)
		}
	}
}

func TestAlertRange(t *testing.T) {
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	now := ms(100*24*time.Hour) + 12345 // a time that is on no boundary
	for _, c := range []struct {
		name                               string
		window, hop, lateness, future, bat time.Duration
		back, ahead                        time.Duration // expected, before alignment
	}{
		{"scheduled batch runs", time.Minute, 0, 2 * time.Minute, 0, 15 * time.Minute,
			2*time.Minute + 4*time.Minute + 30*time.Minute, defaults.WatermarkLead + time.Minute},
		{"on-demand batch runs", 10 * time.Second, 0, 5 * time.Second, 5 * time.Minute, 0,
			5*time.Second + 40*time.Second + defaults.AlertOnDemandLookback, 5*time.Minute + 10*time.Second},
		{"at most AlertMaxWindows windows back", time.Second, 0, time.Hour, 0, time.Hour,
			defaults.AlertMaxWindows * time.Second, defaults.WatermarkLead + time.Second},
		{"hopping windows step by the hop", time.Hour, 15 * time.Minute, 0, 0, time.Minute,
			4*time.Hour + 2*time.Minute, defaults.WatermarkLead + time.Hour},
	} {
		a, err := NewAlert("hot", AlertDef{When: "max_temp > 80", Webhook: "http://x/h"}, alertView(t, c.window, c.hop, c.lateness, c.future))
		if err != nil {
			t.Fatal(err)
		}
		step := c.window
		if c.hop > 0 {
			step = c.hop
		}
		from, to := a.AlertRange(now, c.bat)
		wantFrom := (now - ms(c.back)) / ms(step) * ms(step)
		wantTo := (now+ms(c.ahead))/ms(step)*ms(step) + ms(step)
		if from != wantFrom || to != wantTo {
			t.Errorf("%s: range [%d, %d), want [%d, %d)", c.name, from, to, wantFrom, wantTo)
		}
	}
}

// TestAlertSignature: RFC 4231's test case 2 (HMAC-SHA256 of "what do ya
// want for nothing?" keyed by "Jefe").
func TestAlertSignature(t *testing.T) {
	const want = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
	body, key := []byte("what do ya want for nothing?"), []byte("Jefe")
	if got := AlertSignature(key, body); got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	if !VerifyAlertSignature(key, body, want) || VerifyAlertSignature(key, append(body, ' '), want) || VerifyAlertSignature([]byte("jefe"), body, want) {
		t.Fatal("verification")
	}
}
