package logic

import (
	"fmt"
	"strconv"
	"strings"
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
	a := &Alert{Name: name, View: v, On: OnSpeed, Webhook: def.Webhook, NATS: def.NATS, SecretEnv: def.SecretEnv}
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
	return errs
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
