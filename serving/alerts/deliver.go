package alerts

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/alertbox"
)

// Headers of a webhook delivery.
const (
	HeaderSignature = "X-Braid-Signature" // sha256=<hex HMAC-SHA256 of the body> (logic.AlertSignature)
	HeaderID        = "X-Braid-Alert-Id"  // the delivery's id, as in the body
)

// deliver attempts one delivery: a webhook POST (2xx: delivered) or a
// NATS publish, within the alert's action.timeout. A failed attempt is
// retried after the alert's backoff (logic.Alert.RetryDelay) until its
// last attempt, which moves it to the alert's dead-letter queue. Every
// ending is logged in the journal (the recent deliveries).
func (s *Service) deliver(ctx context.Context, d *alertbox.Delivery) {
	a := s.cat.Alerts[d.Alert]
	if a == nil {
		s.logger.Warn("delivery of an alert no longer configured: dropped", "alert", d.Alert, "id", d.ID)
		_ = d.Done()
		return
	}
	actx, cancel := context.WithTimeout(ctx, a.Timeout)
	status, signed, err := s.attempt(actx, a, d)
	cancel()
	now := time.Now()
	o := alertbox.Outcome{ID: d.ID, State: d.State, Window: d.Window, Group: d.Group, Attempt: d.Attempt, Status: status,
		At: now.UnixMilli(), LatencyMs: now.UnixMilli() - d.Decided, Signed: signed}
	jctx := context.WithoutCancel(ctx)
	if err == nil {
		if err := d.Done(); err != nil {
			s.logger.Warn("delivered but not acknowledged: it may be delivered again", "alert", a.Name, "id", d.ID, "err", err)
		}
		s.m.deliveries.WithLabelValues(a.Name, "delivered").Inc()
		if d.Decided > 0 {
			s.m.latency.WithLabelValues(a.Name, "decision").Observe(max(0, now.Sub(time.UnixMilli(d.Decided)).Seconds()))
		}
		if d.Arrival > 0 {
			s.m.latency.WithLabelValues(a.Name, "arrival").Observe(max(0, now.Sub(time.UnixMilli(d.Arrival)).Seconds()))
		}
		o.Outcome = "delivered"
		s.journal(jctx, a.Name, o)
		return
	}
	if ctx.Err() != nil {
		// Stopping: hand it back untried (the attempt still counts).
		_ = d.Retry(0)
		return
	}
	s.m.failures.WithLabelValues(a.Name).Inc()
	o.Error = err.Error()
	if d.Attempt < a.Attempts {
		delay := a.RetryDelay(d.Attempt)
		if rerr := d.Retry(delay); rerr != nil {
			s.logger.Warn("delivery retry not scheduled: it comes back after the ack wait", "alert", a.Name, "id", d.ID, "err", rerr)
		}
		s.logger.Info("delivery failed; retrying", "alert", a.Name, "id", d.ID, "attempt", d.Attempt, "of", a.Attempts, "in", delay, "err", err)
		o.Outcome = "retry"
		s.journal(jctx, a.Name, o)
		return
	}
	if derr := d.Dead(jctx, err.Error()); derr != nil {
		s.logger.Warn("delivery not moved to the dead-letter queue: it comes back after the ack wait", "alert", a.Name, "id", d.ID, "err", derr)
		return
	}
	s.m.deliveries.WithLabelValues(a.Name, "dead").Inc()
	s.logger.Warn("delivery failed its last attempt: kept in the alert's dead-letter queue", "alert", a.Name, "id", d.ID, "attempts", d.Attempt, "err", err)
	o.Outcome = "dead"
	s.journal(jctx, a.Name, o)
}

// attempt makes one attempt of a delivery: the HTTP status of a webhook
// (0 for a NATS action or no answer) and whether it was signed.
func (s *Service) attempt(ctx context.Context, a *logic.Alert, d *alertbox.Delivery) (status int, signed bool, err error) {
	if a.NATS != "" {
		if s.o.Deliveries == nil {
			return 0, false, fmt.Errorf("no NATS connection")
		}
		return 0, false, s.o.Deliveries.Notify(ctx, a.NATS, d.ID, d.Body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Webhook, bytes.NewReader(d.Body))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "braid-alerts")
	req.Header.Set(HeaderID, d.ID)
	if secret, ok := s.secrets[a.Name]; ok {
		req.Header.Set(HeaderSignature, logic.AlertSignature(secret, d.Body))
		signed = true
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, signed, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, signed, fmt.Errorf("webhook answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return resp.StatusCode, signed, nil
}

// journal records an outcome among the recent deliveries (best effort).
func (s *Service) journal(ctx context.Context, alert string, o alertbox.Outcome) {
	if s.o.Journal == nil {
		return
	}
	if err := s.o.Journal.Log(ctx, alert, o); err != nil {
		s.logger.Debug("delivery outcome not journaled", "alert", alert, "id", o.ID, "err", err)
	}
}
