// Package alerts evaluates the alerts of the catalog on the merged rows of
// their views and delivers what they decide: to webhooks (a JSON POST,
// signed when the alert names a secret) or NATS subjects, at least once,
// each delivery with a stable id.
//
// Evaluation (evaluate.go) runs in the serving processes, on the rows the
// query engine merges (batch ⊕ speed): each alert is evaluated by one
// process at a time (Shares), at every commit of its view's stream and
// every new batch version, over a bounded range of recent windows
// (logic.Alert.AlertRange). What it decides for a row (decide.go) is
// stored in the outbox (Outbox) before its state moves on; its state is
// what the stored records fold to, so a process that takes an alert over
// — after a restart, a kill -9, another process's death — rebuilds it from
// the outbox and decides nothing twice (a decision stored just before a
// crash is decided again with the same id, which the outbox keeps once).
//
// Delivery (deliver.go) runs in every serving process: workers share the
// outbox's deliveries, attempt each up to the alert's action.attempts
// times with exponential backoff, and keep it in the alert's dead-letter
// queue after the last, from where it can be listed and replayed. The
// API (api.go) lists the alerts, the rows firing now, the recent
// deliveries and the dead letters.
package alerts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/metrics"
)

// Options are a Service's dependencies. Catalog is required; without
// Source, Outbox or Shares nothing is evaluated here, without Deliveries
// nothing delivered (the API still answers from what is stored).
type Options struct {
	Catalog    *config.Catalog
	Source     Source
	Outbox     Outbox
	Deliveries Deliveries
	DLQ        DeadLetterQueue
	Journal    Journal
	Shares     Shares
	// BatchEvery is batch.every, which bounds the windows evaluated for
	// corrections (logic.Alert.AlertRange).
	BatchEvery time.Duration
	// Owner names this process in the state it records ("": unnamed).
	Owner string
	// Getenv reads the webhooks' secrets (action.secret_env) at New (nil:
	// os.Getenv is not assumed: required).
	Getenv func(string) string
	// Client posts to webhooks (nil: one with keep-alive connections).
	Client *http.Client
	// Senders is how many deliveries this process attempts at once (0:
	// defaults.AlertSenders).
	Senders  int
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service evaluates and delivers the catalog's alerts, and answers what
// GET /v1/alerts shows. Safe for concurrent use.
type Service struct {
	o       Options
	cat     *config.Catalog
	secrets map[string][]byte // by alert, for signed webhooks
	client  *http.Client
	logger  *slog.Logger
	m       *serviceMetrics
}

// ErrSecretUnset: an alert signs its webhook with a secret whose variable
// is empty.
var ErrSecretUnset = errors.New("alerts: a webhook's secret variable is empty")

// New builds the service; it refuses an alert whose action.secret_env
// names an empty variable.
func New(o Options) (*Service, error) {
	if o.Catalog == nil {
		return nil, errors.New("alerts: a catalog is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Senders <= 0 {
		o.Senders = defaults.AlertSenders
	}
	s := &Service{o: o, cat: o.Catalog, secrets: map[string][]byte{}, client: o.Client, logger: o.Logger.With("component", "alerts")}
	if s.client == nil {
		// Redirects are not followed: a 302 would turn the POST into a GET
		// without the body, and count as delivered.
		s.client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: o.Senders,
			IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	for _, name := range o.Catalog.AlertOrder {
		a := o.Catalog.Alerts[name]
		if a.SecretEnv == "" {
			continue
		}
		if o.Getenv == nil {
			return nil, errors.New("alerts: Getenv is required to read webhook secrets")
		}
		v := o.Getenv(a.SecretEnv)
		if v == "" {
			return nil, fmt.Errorf("%w: alert %s signs its webhook with %s (action.secret_env), which is not set", ErrSecretUnset, name, a.SecretEnv)
		}
		s.secrets[name] = []byte(v)
	}
	var err error
	if s.m, err = newMetrics(o.Registry, o.Catalog, o.DLQ); err != nil {
		return nil, err
	}
	return s, nil
}

// Run evaluates the alerts this process owns and delivers the outbox's
// deliveries until ctx ends; it returns once both stopped.
func (s *Service) Run(ctx context.Context) error {
	if len(s.cat.AlertOrder) == 0 {
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	if s.o.Source != nil && s.o.Outbox != nil && s.o.Shares != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.o.Shares.Run(ctx, s.cat.AlertOrder, s.evaluate)
		}()
	}
	if s.o.Deliveries != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.o.Deliveries.Consume(ctx, s.o.Senders, s.deliver)
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// serviceMetrics are the alerts' Prometheus series.
type serviceMetrics struct {
	firings    *prometheus.CounterVec   // alert, state
	deliveries *prometheus.CounterVec   // alert, outcome
	failures   *prometheus.CounterVec   // alert
	latency    *prometheus.HistogramVec // alert, since
	evalDur    *prometheus.HistogramVec // alert
}

func newMetrics(reg prometheus.Registerer, cat *config.Catalog, dlq DeadLetterQueue) (*serviceMetrics, error) {
	m := &serviceMetrics{}
	var err error
	if m.firings, err = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_alert_firings_total",
		Help: "Decisions of the alerts evaluated here stored for delivery, by alert and state (firing, resolved, corrected)."}, []string{"alert", "state"})); err != nil {
		return nil, err
	}
	if m.deliveries, err = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_alert_deliveries_total",
		Help: "Deliveries this process ended, by alert and outcome (delivered; dead: kept in the alert's dead-letter queue after its last attempt)."}, []string{"alert", "outcome"})); err != nil {
		return nil, err
	}
	if m.failures, err = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_alert_delivery_failures_total",
		Help: "Delivery attempts that failed (a webhook's error or non-2xx status, a NATS publish error, a timeout), by alert."}, []string{"alert"})); err != nil {
		return nil, err
	}
	if m.latency, err = metrics.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "braid_alert_delivery_seconds",
		Help:    "Time to a delivery's success, by alert and since: decision (the evaluator stored it) or arrival (the newest event of the row's answer was acknowledged).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}, []string{"alert", "since"})); err != nil {
		return nil, err
	}
	if m.evalDur, err = metrics.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "braid_alert_evaluation_seconds",
		Help: "Duration of one evaluation of an alert over its range of windows.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"alert"})); err != nil {
		return nil, err
	}
	for _, name := range cat.AlertOrder {
		for _, st := range []string{logic.AlertFiring, logic.AlertResolved, logic.AlertCorrected} {
			m.firings.WithLabelValues(name, st)
		}
		m.deliveries.WithLabelValues(name, "delivered")
		m.deliveries.WithLabelValues(name, "dead")
		m.failures.WithLabelValues(name)
	}
	if dlq != nil && len(cat.AlertOrder) > 0 {
		if _, err := metrics.Register(reg, &dlqCollector{dlq: dlq, alerts: cat.AlertOrder,
			desc: prometheus.NewDesc("braid_alert_dead_letters", "Deliveries kept in each alert's dead-letter queue.", []string{"alert"}, nil)}); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// dlqCollector reads the dead-letter counts when scraped.
type dlqCollector struct {
	dlq    DeadLetterQueue
	alerts []string
	desc   *prometheus.Desc
}

func (c *dlqCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *dlqCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.dlq.DeadLetterCounts(ctx)
	if err != nil {
		return
	}
	for _, a := range c.alerts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[a]), a)
	}
}
