package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/alerts"
)

// The demo's webhook receiver: `braid up` serves it at /demo/hooks when an
// alert signs its deliveries with demoHookEnv (configs/demo.yaml's
// overheat alert), and sets that variable to demoHookSecret when it is
// unset, so the demo runs without setup. It checks each delivery's
// signature and keeps the last ones for the dashboard (GET /demo/hooks).
const (
	demoHookEnv    = "BRAID_DEMO_HOOK_SECRET"
	demoHookSecret = "braid-demo-secret"
	demoHookPath   = "/demo/hooks"
	demoHookKeep   = 100
)

// demoHooks is the receiver.
type demoHooks struct {
	secret []byte
	mu     sync.Mutex
	got    []demoHook // newest last
	ids    map[string]int
	total  int
	bad    int
}

// demoHook is one delivery received.
type demoHook struct {
	ID             string         `json:"id"`
	Alert          string         `json:"alert"`
	State          string         `json:"state"`
	WindowStart    string         `json:"window_start"`
	Group          map[string]any `json:"group"`
	Values         map[string]any `json:"values"`
	SignatureValid bool           `json:"signature_valid"`
	ReceivedAt     string         `json:"received_at"`
	Times          int            `json:"times"` // deliveries of this id so far (at least once: a repeat is harmless)
}

func newDemoHooks(secret string) *demoHooks {
	return &demoHooks{secret: []byte(secret), ids: map[string]int{}}
}

// wrap serves the receiver at demoHookPath and everything else with next.
func (h *demoHooks) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != demoHookPath {
			next.ServeHTTP(w, r)
			return
		}
		switch r.Method {
		case http.MethodPost:
			h.receive(w, r)
		case http.MethodGet:
			h.list(w)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

// receive takes a delivery: 200 when its signature is valid, else 401
// (Braid then retries it and, after its last attempt, keeps it in the
// alert's dead-letter queue).
func (h *demoHooks) receive(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	var b alerts.Body
	if err := json.Unmarshal(body, &b); err != nil {
		http.Error(w, "not a delivery", http.StatusBadRequest)
		return
	}
	valid := logic.VerifyAlertSignature(h.secret, body, r.Header.Get(alerts.HeaderSignature))
	h.mu.Lock()
	h.total++
	if !valid {
		h.bad++
	}
	if len(h.ids) >= 100*demoHookKeep {
		h.ids = map[string]int{} // a demo's memory stays small
	}
	h.ids[b.ID]++
	h.got = append(h.got, demoHook{ID: b.ID, Alert: b.Alert, State: b.State, WindowStart: b.WindowStart, Group: b.Group, Values: b.Values,
		SignatureValid: valid, ReceivedAt: logic.FormatTime(time.Now().UnixMilli()), Times: h.ids[b.ID]})
	if len(h.got) > demoHookKeep {
		h.got = h.got[len(h.got)-demoHookKeep:]
	}
	h.mu.Unlock()
	if !valid {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// list answers the deliveries received, newest first.
func (h *demoHooks) list(w http.ResponseWriter) {
	h.mu.Lock()
	out := struct {
		Received      int        `json:"received"`
		BadSignatures int        `json:"bad_signatures"`
		DistinctIDs   int        `json:"distinct_ids"`
		Deliveries    []demoHook `json:"deliveries"`
	}{Received: h.total, BadSignatures: h.bad, DistinctIDs: len(h.ids), Deliveries: make([]demoHook, 0, len(h.got))}
	for i := len(h.got) - 1; i >= 0; i-- {
		out.Deliveries = append(out.Deliveries, h.got[i])
	}
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// useDemoHooks makes `braid up` serve the demo's receiver when an alert
// signs with demoHookEnv, setting the variable to the demo's secret when
// it is unset.
func (a *app) useDemoHooks() {
	for _, al := range a.cat.Alerts {
		if al.SecretEnv != demoHookEnv {
			continue
		}
		secret := os.Getenv(demoHookEnv)
		if secret == "" {
			secret = demoHookSecret
			_ = os.Setenv(demoHookEnv, secret)
			a.logger.Info("alerts: the demo's webhook secret is used (set " + demoHookEnv + " to choose one)")
		}
		a.demoHooks = newDemoHooks(secret)
		a.logger.Info("serving the demo's webhook receiver", "path", demoHookPath)
		return
	}
}
