// Package serving is Braid's HTTP API (chi): ingest through the streams'
// logic into the event log (the use case is package serving/ingest),
// merged queries (batch view ⊕ speed deltas after the batch cutoff), batch
// runs, the dead-letter queue, status, health and metrics. Queries are
// answered by the query engine (serving/query): the handlers here parse
// parameters into a query.Query and write what it answers. The stores are
// reached through small interfaces declared by their consumers (query's,
// ingest's, and here interfaces.go).
package serving

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/metrics"
)

// Options are the server's dependencies. Catalog is required; every other
// dependency may be nil: the routes that need it answer 503 "unavailable"
// (a nil Speed makes queries batch-only, with a warning).
type Options struct {
	Config      *config.Config  // the http section (nil: defaults)
	Catalog     *config.Catalog // streams and views
	Log         EventLog
	Speed       query.SpeedReader
	SpeedStatus query.SpeedStatus
	Archive     ArchiveStatus
	Owners      PartitionOwners // the holders of the streams' partitions (nil: owners unknown, null in the status)
	Views       BatchViews
	Runner      BatchRunner
	RunnerBusy  error                           // the error Runner.Start matches when busy (e.g. batch.ErrBusy); ErrBatchBusy always counts
	Ready       func(ctx context.Context) error // /readyz: nil error = ready (nil func: always ready)
	Root        http.Handler                    // mounted at "/" (the dashboard) when non-nil
	Ingester    *ingest.Ingester                // shared ingester (nil: one is made from Catalog, Log and Features)
	Logger      *slog.Logger
	Registry    *prometheus.Registry // metrics are registered here and served at /metrics (nil: a private one)

	// Getenv reads the auth keys' token_env variables at start (nil: os.Getenv).
	Getenv func(string) string
	// Notifier announces the speed layer's commits (one subscription per
	// process) for live pushes. nil: one process-wide poll of the streams'
	// positions (SpeedStatus) every LivePoll while live clients exist.
	Notifier query.CommitNotifier
	// LivePoll is the fallback poll period without a Notifier, and the
	// period of the batch-version check for live clients (0:
	// defaults.LivePoll).
	LivePoll time.Duration
	// QueryCacheBytes bounds the memory kept for answering queries again
	// (0: no cache): answers, keyed by the batch version and the speed
	// position, so a commit or a batch run makes them unreachable; and the
	// encoded rows of final windows per batch version (serving/query).
	QueryCacheBytes int64
	// Auditor serves GET /v1/views/{view}/audit (nil: 501).
	Auditor Auditor

	// Features answers the entities' features for decisions at ingest
	// (?decide=true) when the server makes its ingester. nil: a rule's
	// features.<name> reads null.
	Features ingest.Features
	// SpeedUsage measures what each view's speed state costs in Redis
	// (nil: unknown), at most once per SpeedCostEvery (0:
	// defaults.SpeedCostEvery), when /metrics or /v1/status ask.
	SpeedUsage     SpeedUsage
	SpeedCostEvery time.Duration
	// Entities answers GET /v1/entities/{entity}/{key} and POST
	// /v1/entities/{entity}:lookup (nil: 503).
	Entities EntityReader
	// Engine is a query engine shared with other components (the alerts'
	// evaluator); nil: the server makes its own (NewEngine) and closes it
	// with itself.
	Engine *query.Engine
	// Alerts serves GET /v1/alerts and the alerts' dead letters (nil:
	// 503 while the catalog has alerts).
	Alerts Alerts
}

// Server is the HTTP API.
type Server struct {
	opts     Options
	cfg      *config.Config
	logger   *slog.Logger
	reg      *prometheus.Registry
	ingester *ingest.Ingester
	inflight chan struct{}
	bodyMem  *memBudget // ingest bodies in memory (http.ingest_memory_bytes)
	started  time.Time
	handler  http.Handler

	requests *prometheus.CounterVec
	queryDur *prometheus.HistogramVec

	auth         *auth
	authOn       bool // auth.keys configured: tokens required on /v1
	authFailures *prometheus.CounterVec
	engine       *query.Engine
	costs        *costs // nil without Options.SpeedUsage
	ownEngine    bool   // made here: closed with the server
	sseClients   prometheus.Gauge
	bgCtx        context.Context
	bgCancel     context.CancelFunc
}

// New builds the server.
func New(opts Options) (*Server, error) {
	if opts.Catalog == nil {
		return nil, errors.New("serving: a catalog is required")
	}
	cfg := opts.Config
	if cfg == nil {
		d := config.Default()
		cfg = &d
	}
	s := &Server{opts: opts, cfg: cfg, logger: opts.Logger, reg: opts.Registry, started: time.Now()}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if s.ingester = opts.Ingester; s.ingester == nil {
		var log ingest.Log // nil, not a nil EventLog: the ingester then knows it has none
		if opts.Log != nil {
			log = opts.Log
		}
		s.ingester = ingest.NewIngester(log, opts.Catalog, s.reg, ingest.WithFeatures(opts.Features))
	}
	n := cfg.HTTP.MaxInFlight
	if n < 1 {
		n = defaults.HTTPMaxInFlight
	}
	s.inflight = make(chan struct{}, n)
	s.bodyMem = &memBudget{max: cfg.HTTP.IngestMemory()}
	if s.bodyMem.max <= 0 {
		s.bodyMem.max = defaults.HTTPIngestMemoryFactor * defaults.HTTPMaxBodyBytes
	}
	var err error
	if s.requests, err = metrics.Register(s.reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_http_requests_total", Help: "HTTP requests by route pattern and status code."}, []string{"route", "code"})); err != nil {
		return nil, err
	}
	if s.queryDur, err = metrics.Register(s.reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "braid_query_duration_seconds", Help: "Duration of view queries.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"view"})); err != nil {
		return nil, err
	}
	if s.authFailures, err = metrics.Register(s.reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_auth_failures_total", Help: "Requests refused by access control, by status (401, 403)."}, []string{"code"})); err != nil {
		return nil, err
	}
	if _, err = metrics.Register(s.reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "braid_ingest_memory_bytes", Help: "Memory held by ingest bodies being read and stored (at most http.ingest_memory_bytes)."},
		func() float64 { return float64(s.bodyMem.used.Load()) })); err != nil {
		return nil, err
	}
	if s.sseClients, err = metrics.Register(s.reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "braid_sse_clients", Help: "Connected live (Server-Sent Events) clients."})); err != nil {
		return nil, err
	}
	if opts.Log != nil && (opts.SpeedStatus != nil || opts.Archive != nil) {
		if _, err = metrics.Register(s.reg, newPartitionLag(opts.Catalog, opts.Log, opts.SpeedStatus, opts.Archive)); err != nil {
			return nil, err
		}
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if s.auth, err = newAuth(cfg.Auth.Keys, getenv, s.logger.Warn); err != nil {
		return nil, err
	}
	s.authOn = len(cfg.Auth.Keys) > 0
	switch {
	case !s.authOn:
		s.logger.Warn("AUTH DISABLED: no auth.keys configured, every /v1 route is open to anyone who can reach this port - development only")
	case len(s.auth.keys) == 0:
		s.logger.Warn("auth: every configured key is disabled (token variables empty): every /v1 request will be refused with 401")
	default:
		s.logger.Info("auth enabled", "keys", len(s.auth.keys))
	}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	if s.engine = opts.Engine; s.engine == nil {
		opts.Logger, opts.Registry = s.logger, s.reg
		if s.engine, err = NewEngine(opts); err != nil {
			s.bgCancel()
			return nil, err
		}
		s.ownEngine = true
	}
	if opts.SpeedUsage != nil {
		s.costs = newCosts(opts.SpeedUsage, opts.Catalog, opts.SpeedCostEvery, s.logger, s.bgCtx)
	}
	if _, err = metrics.Register(s.reg, newViewMetrics(s)); err != nil {
		s.bgCancel()
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// NewEngine makes the query engine a server built from opts answers
// with, for sharing it (Options.Engine): the stores, the http section's
// bounds, the cache and the live-push notifier of opts.
func NewEngine(opts Options) (*query.Engine, error) {
	cfg := opts.Config
	if cfg == nil {
		d := config.Default()
		cfg = &d
	}
	return query.New(query.Options{Catalog: opts.Catalog, Speed: opts.Speed, SpeedStatus: opts.SpeedStatus, Views: opts.Views,
		MaxCells: cfg.HTTP.QueryMaxCells, MaxRows: cfg.HTTP.QueryMaxRows, CacheBytes: opts.QueryCacheBytes,
		Notifier: opts.Notifier, LivePoll: opts.LivePoll, Logger: opts.Logger, Registry: opts.Registry})
}

// Close stops the server's background work (the query engine's, when it
// made it: the live-push subscription, the loading of batch versions).
// Open live streams end.
func (s *Server) Close() error {
	s.bgCancel()
	if !s.ownEngine {
		return nil
	}
	return s.engine.Close()
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Ingester returns the server's ingester (for counts or reuse).
func (s *Server) Ingester() *ingest.Ingester { return s.ingester }

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.bodyDeadline, s.instrument, s.recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found", r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed", r.Method)
	})
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.handleReady)
	r.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	r.Route("/v1", func(r chi.Router) {
		r.Use(s.authenticate)
		r.With(s.need(scopeIngest)).Post("/streams/{stream}/events", s.handleIngest)
		r.With(s.need(scopeAdmin)).Get("/streams/{stream}/blocked", s.handleBlocked)
		r.With(s.need(scopeAny)).Get("/views", s.handleViews)
		r.With(s.need(scopeRead)).Get("/views/{view}", s.handleQuery)
		r.With(s.need(scopeRead)).Get("/views/{view}/live", s.handleLive)
		r.With(s.need(scopeAdmin)).Get("/views/{view}/audit", s.handleAudit)
		r.With(s.need(scopeAny)).Get("/openapi.json", s.handleOpenAPI)
		r.With(s.need(scopeAdmin)).Get("/status", s.handleStatus)
		r.With(s.need(scopeAdmin)).Post("/batch/runs", s.handleBatchStart)
		r.With(s.need(scopeAdmin)).Get("/batch/runs", s.handleBatchRuns)
		r.With(s.need(scopeAdmin)).Get("/batch/runs/{id}", s.handleBatchRun)
		r.With(s.need(scopeAdmin)).Get("/dlq/{stream}", s.handleDLQ)
		r.With(s.need(scopeAdmin)).Post("/dlq/{stream}/replay", s.handleDLQReplay)
		r.With(s.need(scopeReadEntity)).Get("/entities/{entity}/{key}", s.handleEntity)
		r.With(s.need(scopeReadEntity)).Post("/entities/{target}", s.handleEntityPost)
		r.With(s.need(scopeAdmin)).Get("/alerts", s.handleAlerts)
		r.With(s.need(scopeAdmin)).Get("/alerts/{alert}/dlq", s.handleAlertDLQ)
		r.With(s.need(scopeAdmin)).Post("/alerts/{alert}/dlq/replay", s.handleAlertReplay)
		r.NotFound(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "not found", r.URL.Path)
		})
	})
	if s.opts.Root != nil {
		r.Handle("/*", s.opts.Root)
	}
	return r
}

// instrument logs every request (method, path without the query, status,
// duration; never headers or query strings, which may hold tokens) and
// counts it by route pattern.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			status := ww.Status()
			switch {
			case status == 0 && r.Context().Err() != nil:
				status = statusClientClosed // the client left before an answer
			case status == 0:
				status = http.StatusOK
			}
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			s.requests.WithLabelValues(route, fmt.Sprint(status)).Inc()
			// Successful requests are Debug: ingest and dashboards make many.
			level := slog.LevelDebug
			switch {
			case status >= 500:
				level = slog.LevelWarn
			case status >= 400:
				level = slog.LevelInfo
			}
			s.logger.LogAttrs(r.Context(), level, "http request", slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", status), slog.Duration("duration", time.Since(start)), slog.Int("bytes", ww.BytesWritten()))
		}()
		next.ServeHTTP(ww, r)
	})
}

// statusClientClosed is recorded (in logs and braid_http_requests_total)
// for a request whose client left before it was answered; nothing is sent.
const statusClientClosed = 499

// recoverer turns a panic into a 500 and logs it (http.ErrAbortHandler is
// passed on).
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // sentinel value, compared as net/http does
					panic(p)
				}
				s.logger.Error("panic in handler", "path", r.URL.Path, "panic", fmt.Sprint(p))
				writeError(w, http.StatusInternalServerError, "internal error", nil)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.opts.Ready != nil {
		if err := s.opts.Ready(r.Context()); err != nil {
			writeError(w, http.StatusServiceUnavailable, "not ready", err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// apiError is the body of every error answer.
type apiError struct {
	Error  string `json:"error"`
	Detail any    `json:"detail"`
}

func writeError(w http.ResponseWriter, status int, msg string, detail any) {
	writeJSON(w, status, apiError{Error: msg, Detail: detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(apiError{Error: "encode response", Detail: err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
