package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/braid-data/braid/logic"
)

// Errors of the API, for callers to branch on.
var (
	ErrUnknownAlert = errors.New("alerts: unknown alert")
	ErrUnavailable  = errors.New("alerts: not available in this process")
)

// Status is an alert as GET /v1/alerts shows it: its definition, the rows
// firing now (as its evaluator last recorded them), its recent deliveries
// (newest first) and how many deliveries its dead-letter queue keeps.
type Status struct {
	Name         string            `json:"name"`
	View         string            `json:"view"`
	When         string            `json:"when"`
	On           string            `json:"on"`
	Action       Action            `json:"action"`
	Evaluator    string            `json:"evaluator"`
	EvaluatedAt  *string           `json:"evaluated_at"`
	BatchVersion string            `json:"batch_version"`
	Firing       []firingRow       `json:"firing"`
	Recent       []DeliveryOutcome `json:"recent_deliveries"`
	DeadLetters  uint64            `json:"dead_letters"`
	Errors       []string          `json:"errors,omitempty"` // parts that could not be read now
}

// Action is where an alert's deliveries go and how they are retried.
type Action struct {
	Webhook  string `json:"webhook,omitempty"`
	NATS     string `json:"nats,omitempty"`
	Signed   bool   `json:"signed"`
	Attempts int    `json:"attempts"`
	Backoff  string `json:"backoff"`
	Timeout  string `json:"timeout"`
}

// DeliveryOutcome is how one delivery attempt ended.
type DeliveryOutcome struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	WindowStart string `json:"window_start"`
	Group       string `json:"group"`
	Outcome     string `json:"outcome"` // delivered | retry | dead
	Attempt     int    `json:"attempt"`
	Status      int    `json:"status,omitempty"`
	Error       string `json:"error,omitempty"`
	At          string `json:"at"`
	LatencyMs   int64  `json:"latency_ms"` // decision to this outcome
	Signed      bool   `json:"signed"`
}

// DeadLetter is a delivery kept in an alert's dead-letter queue.
type DeadLetter struct {
	Seq         uint64          `json:"seq"`
	ID          string          `json:"id"`
	State       string          `json:"state"`
	WindowStart string          `json:"window_start"`
	Group       string          `json:"group"`
	Attempts    int             `json:"attempts"`
	Error       string          `json:"error"`
	FailedAt    string          `json:"failed_at"`
	Body        json.RawMessage `json:"body"`
}

// Alert returns the named alert of the catalog (nil: none).
func (s *Service) Alert(name string) *logic.Alert { return s.cat.Alerts[name] }

// List returns every alert's status, in name order. A part that cannot be
// read (the journal, the dead-letter queue) is named in Errors.
func (s *Service) List(ctx context.Context) []Status {
	out := make([]Status, 0, len(s.cat.AlertOrder))
	var counts map[string]uint64
	var countErr error
	if s.o.DLQ != nil {
		counts, countErr = s.o.DLQ.DeadLetterCounts(ctx)
	}
	for _, name := range s.cat.AlertOrder {
		a := s.cat.Alerts[name]
		st := Status{Name: name, View: a.View.Name, When: a.When.String(), On: a.On.String(), Firing: []firingRow{}, Recent: []DeliveryOutcome{},
			Action: Action{Webhook: redact(a.Webhook), NATS: a.NATS, Signed: a.SecretEnv != "", Attempts: a.Attempts,
				Backoff: a.Backoff.String(), Timeout: a.Timeout.String()}}
		if countErr != nil {
			st.Errors = append(st.Errors, "dead letters: "+countErr.Error())
		}
		st.DeadLetters = counts[name]
		if s.o.Journal != nil {
			if data, err := s.o.Journal.State(ctx, name); err != nil {
				st.Errors = append(st.Errors, "state: "+err.Error())
			} else if data != nil {
				var es evalState
				if err := json.Unmarshal(data, &es); err == nil {
					st.Evaluator, st.EvaluatedAt, st.BatchVersion = es.Evaluator, &es.EvaluatedAt, es.Version
					if es.Firing != nil {
						st.Firing = es.Firing
					}
				}
			}
			if rec, err := s.o.Journal.Recent(ctx, name); err != nil {
				st.Errors = append(st.Errors, "recent deliveries: "+err.Error())
			} else {
				for _, o := range slices.Backward(rec) {
					st.Recent = append(st.Recent, DeliveryOutcome{ID: o.ID, State: o.State, WindowStart: logic.FormatTime(o.Window), Group: o.Group,
						Outcome: o.Outcome, Attempt: o.Attempt, Status: o.Status, Error: o.Error, At: logic.FormatTime(o.At), LatencyMs: o.LatencyMs, Signed: o.Signed})
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// DeadLetters lists up to limit (0: all) of an alert's dead letters,
// oldest first.
func (s *Service) DeadLetters(ctx context.Context, name string, limit int) ([]DeadLetter, error) {
	if s.cat.Alerts[name] == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownAlert, name)
	}
	if s.o.DLQ == nil {
		return nil, ErrUnavailable
	}
	dls, err := s.o.DLQ.DeadLetters(ctx, name, limit)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(dls))
	for _, d := range dls {
		body := json.RawMessage(d.Body)
		if !json.Valid(body) {
			b, _ := json.Marshal(string(d.Body))
			body = b
		}
		out = append(out, DeadLetter{Seq: d.Seq, ID: d.ID, State: d.State, WindowStart: logic.FormatTime(d.Window), Group: d.Group,
			Attempts: d.Attempts, Error: d.Error, FailedAt: logic.FormatTime(d.FailedAt), Body: body})
	}
	return out, nil
}

// Replay puts an alert's dead letters back for delivery (same ids and
// bodies) and returns how many.
func (s *Service) Replay(ctx context.Context, name string) (int, error) {
	if s.cat.Alerts[name] == nil {
		return 0, fmt.Errorf("%w: %q", ErrUnknownAlert, name)
	}
	if s.o.DLQ == nil {
		return 0, ErrUnavailable
	}
	n, err := s.o.DLQ.Replay(ctx, name)
	if n > 0 {
		s.logger.Info("dead letters replayed", "alert", name, "replayed", n)
	}
	return n, err
}

// redact hides a password in a webhook URL.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	}
	return raw
}
