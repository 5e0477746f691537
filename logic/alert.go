package logic

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/braid-data/braid/logic/defaults"
)

// AlertOn is when an alert's condition is evaluated.
type AlertOn uint8

// When alerts are evaluated.
const (
	// OnSpeed evaluates the merged row each time the speed layer commits
	// a change to it: the alert fires when the row first crosses.
	OnSpeed AlertOn = iota + 1
	// OnFinal evaluates a window's rows once the window is final.
	OnFinal
)

func (o AlertOn) String() string {
	if o == OnFinal {
		return "final"
	}
	return "speed"
}

// Alert states, as deliveries name them.
const (
	AlertFiring    = "firing"
	AlertResolved  = "resolved"
	AlertCorrected = "corrected"
)

// AlertDef is an alert as the configuration declares it.
type AlertDef struct {
	View      string
	When      string
	On        string // speed (default) | final
	Webhook   string // POST target; or
	NATS      string // a NATS subject
	SecretEnv string // names the variable holding the webhook's HMAC key
	// Delivery: attempts before a delivery goes to the alert's dead-letter
	// queue, the first retry's delay (doubling up to
	// defaults.AlertMaxBackoff) and the time one attempt may take (0:
	// defaults.AlertAttempts, AlertBackoff, AlertTimeout).
	Attempts int
	Backoff  time.Duration
	Timeout  time.Duration
}

// Alert is a compiled alert: a condition over one view's merged rows.
type Alert struct {
	Name      string
	View      *View
	When      *Cond
	On        AlertOn
	Webhook   string
	NATS      string
	SecretEnv string
	Attempts  int           // deliveries attempted before the dead-letter queue
	Backoff   time.Duration // the first retry's delay; doubled per attempt up to defaults.AlertMaxBackoff
	Timeout   time.Duration // one attempt's bound
}

// AlertSchema is what an alert's condition over v may read: the view's
// dimensions and measures, with the types of their values in query rows.
func AlertSchema(v *View) CondSchema {
	s := CondSchema{}
	for _, d := range v.Dims {
		s[d] = v.Stream.Fields[v.Stream.FieldIndex(d)].Type
	}
	for i := range v.Measures {
		s[v.Measures[i].Name] = v.Measures[i].ResultType()
	}
	return s
}

// NewAlert compiles an alert over its view.
func NewAlert(name string, def AlertDef, v *View) (*Alert, error) {
	errs := CheckAlert(name, def, v)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	a := &Alert{Name: name, View: v, On: OnSpeed, Webhook: def.Webhook, NATS: def.NATS, SecretEnv: def.SecretEnv,
		Attempts: def.Attempts, Backoff: def.Backoff, Timeout: def.Timeout}
	if a.Attempts == 0 {
		a.Attempts = defaults.AlertAttempts
	}
	if a.Backoff == 0 {
		a.Backoff = defaults.AlertBackoff
	}
	if a.Timeout == 0 {
		a.Timeout = defaults.AlertTimeout
	}
	if def.On == "final" {
		a.On = OnFinal
	}
	a.When, _ = ParseCond(def.When, AlertSchema(v))
	return a, nil
}

// CheckAlert lists every mistake of an alert definition, each with its key
// under the alert (when, on, action).
func CheckAlert(name string, def AlertDef, v *View) []DefError {
	var errs []DefError
	if strings.TrimSpace(def.When) == "" {
		errs = append(errs, DefError{Key: "when", Err: fmt.Errorf("when: an alert needs a condition, e.g. \"max_temp > 80\"")})
	} else if _, err := ParseCond(def.When, AlertSchema(v)); err != nil {
		errs = append(errs, DefError{Key: "when", Err: err})
	}
	switch def.On {
	case "", "speed", "final":
	default:
		errs = append(errs, DefError{Key: "on", Err: fmt.Errorf("on: %q is not speed or final", def.On)})
	}
	switch {
	case def.Webhook == "" && def.NATS == "":
		errs = append(errs, DefError{Key: "action", Err: fmt.Errorf("action: give a webhook URL or a nats subject")})
	case def.Webhook != "" && def.NATS != "":
		errs = append(errs, DefError{Key: "action", Err: fmt.Errorf("action: give a webhook or a nats subject, not both")})
	case def.Webhook != "" && !strings.HasPrefix(def.Webhook, "http://") && !strings.HasPrefix(def.Webhook, "https://"):
		errs = append(errs, DefError{Key: "action.webhook", Err: fmt.Errorf("action.webhook: %q is not an http(s) URL", def.Webhook)})
	case def.NATS != "" && strings.ContainsAny(def.NATS, " \t*>"):
		errs = append(errs, DefError{Key: "action.nats", Err: fmt.Errorf("action.nats: %q is not a NATS subject to publish to (no spaces or wildcards)", def.NATS)})
	}
	if def.SecretEnv != "" && def.Webhook == "" {
		errs = append(errs, DefError{Key: "action.secret_env", Err: fmt.Errorf("action.secret_env: signatures are for webhooks")})
	}
	if def.Attempts < 0 || def.Attempts > maxAlertAttempts {
		errs = append(errs, DefError{Key: "action.attempts", Err: fmt.Errorf("action.attempts: %d is not between 1 and %d", def.Attempts, maxAlertAttempts)})
	}
	if def.Backoff != 0 && (def.Backoff < 10*time.Millisecond || def.Backoff > defaults.AlertMaxBackoff) {
		errs = append(errs, DefError{Key: "action.backoff", Err: fmt.Errorf("action.backoff: %s is not between 10ms and %s", def.Backoff, defaults.AlertMaxBackoff)})
	}
	if def.Timeout != 0 && (def.Timeout < 100*time.Millisecond || def.Timeout > maxAlertTimeout) {
		errs = append(errs, DefError{Key: "action.timeout", Err: fmt.Errorf("action.timeout: %s is not between 100ms and %s", def.Timeout, maxAlertTimeout)})
	}
	return errs
}

// Bounds of an alert's delivery settings.
const (
	maxAlertAttempts = 100
	maxAlertTimeout  = 5 * time.Minute
)

// RetryDelay is how long a delivery waits after its attempt-th failed
// attempt (1 for the first): Backoff doubled per attempt, at most
// defaults.AlertMaxBackoff.
func (a *Alert) RetryDelay(attempt int) time.Duration {
	d := a.Backoff
	for i := 1; i < attempt && d < defaults.AlertMaxBackoff; i++ {
		d *= 2
	}
	return min(d, defaults.AlertMaxBackoff)
}

// AlertRange is the range of window starts, [from, to) in unix ms, whose
// rows an alert evaluates at now (unix ms), given how often batch runs
// come (batch.every; 0: on demand only): from the windows that may still
// take late events — the stream's allowed lateness — plus
// defaults.AlertSpareWindows windows, plus two batch periods (or
// defaults.AlertOnDemandLookback) so that a batch run's corrections of
// windows that fired are seen; up to the windows events may be stamped
// with ahead of now (max_future) and one more. The range covers at most
// defaults.AlertMaxWindows windows back from now (hopping views: window
// starts every hop). Window starts are aligned like the view's.
func (a *Alert) AlertRange(now int64, batchEvery time.Duration) (from, to int64) {
	v := a.View
	step := v.Window.Step()
	corr := 2 * batchEvery
	if batchEvery <= 0 {
		corr = defaults.AlertOnDemandLookback
	}
	back := v.Stream.AllowedLateness + time.Duration(defaults.AlertSpareWindows)*v.Window.Size + corr
	back = min(back, time.Duration(defaults.AlertMaxWindows)*step)
	ahead := v.Stream.WatermarkLead() + v.Window.Size
	s := step.Milliseconds()
	from = floorMs(now-back.Milliseconds(), s)
	to = floorMs(now+ahead.Milliseconds(), s) + s
	return from, to
}

func floorMs(t, step int64) int64 {
	r := t % step
	if r < 0 {
		r += step
	}
	return t - r
}

// AlertSignature is the X-Braid-Signature of a delivery's body signed
// with secret: "sha256=" and the hex HMAC-SHA256 of the exact body bytes
// keyed by the secret's bytes.
func AlertSignature(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifyAlertSignature reports whether sig is body's AlertSignature with
// secret (compared in constant time).
func VerifyAlertSignature(secret, body []byte, sig string) bool {
	return hmac.Equal([]byte(AlertSignature(secret, body)), []byte(sig))
}

// AlertID is the stable id of one delivery: <alert>/<window_start>/<group
// key>/<state>, and for a correction also the batch version that made it.
// The group key is the row's dimension values joined by commas, in the
// view's order ("" for a view without dimensions).
func AlertID(alert string, windowStartMs int64, groupKey, state, version string) string {
	id := alert + "/" + FormatTime(windowStartMs) + "/" + groupKey + "/" + state
	if state == AlertCorrected && version != "" {
		id += "/" + version
	}
	return id
}

// GroupKey renders a row's dimension values for alert ids.
func GroupKey(vals []Value) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = strconv.Quote(v.String())
		if !strings.ContainsAny(parts[i][1:len(parts[i])-1], `,"\/`) {
			parts[i] = parts[i][1 : len(parts[i])-1]
		}
	}
	return strings.Join(parts, ",")
}
