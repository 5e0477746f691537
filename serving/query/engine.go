package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/metrics"
)

// Options are the engine's dependencies. Catalog is required; Speed,
// SpeedStatus and Views may be nil: an answer is then computed from the
// other layer alone, with a warning.
type Options struct {
	Catalog     *config.Catalog // the views the engine keeps loaded (warm.go)
	Speed       SpeedReader     // the speed layer's cells
	SpeedStatus SpeedStatus     // the speed layer's positions
	Views       BatchViews      // the batch views' versions and rows
	// MaxCells and MaxRows bound what one answer reads and computes
	// (http.query_max_cells, http.query_max_rows; 0: no bound).
	MaxCells, MaxRows int64
	// CacheBytes bounds the memory kept for answering queries again (0: no
	// cache): answers, keyed by the batch version and the speed position,
	// so a commit or a batch run makes them unreachable; and the encoded
	// rows of final windows per batch version (buckets.go).
	CacheBytes int64
	// Notifier announces the speed layer's commits (one subscription per
	// process) for live queries. nil: one process-wide poll of the streams'
	// positions (SpeedStatus) every LivePoll while live queries exist.
	Notifier CommitNotifier
	// LivePoll is the fallback poll period without a Notifier, the period
	// of the batch-version check for live queries and of the loading of
	// new batch versions (0: 1s).
	LivePoll time.Duration
	Logger   *slog.Logger
	Registry prometheus.Registerer // metrics are registered here (nil: none)
}

// Engine answers view queries. Safe for concurrent use; Close ends its
// background work.
type Engine struct {
	cat      *config.Catalog
	speed    SpeedReader
	status   SpeedStatus
	views    BatchViews
	maxCells int64
	maxRows  int64
	notifier CommitNotifier
	poll     time.Duration
	logger   *slog.Logger

	cache        *byteLRU
	cacheLookups *prometheus.CounterVec
	bucketUse    *prometheus.CounterVec
	computing    prometheus.Gauge
	computations *prometheus.CounterVec
	shared       prometheus.Counter
	liveQueries  prometheus.Gauge
	answers      *flights[*cachedAnswer]  // answers being computed, by cache key
	bodies       *flights[*Body]          // JSON answers being assembled, by cache key
	snapshots    *flights[*speedSnapshot] // speed cells being read, by view, position and range
	hub          *hub
	bgCtx        context.Context
	bgCancel     context.CancelFunc
}

// New builds the engine and starts its background work: the loading of
// each new batch version (when Views is set); live queries start with
// their first client.
func New(opts Options) (*Engine, error) {
	if opts.Catalog == nil {
		return nil, errors.New("query: a catalog is required")
	}
	e := &Engine{cat: opts.Catalog, speed: opts.Speed, status: opts.SpeedStatus, views: opts.Views, maxCells: opts.MaxCells, maxRows: opts.MaxRows,
		notifier: opts.Notifier, poll: opts.LivePoll, logger: opts.Logger}
	if e.poll <= 0 {
		e.poll = defaults.LivePoll
	}
	if e.logger == nil {
		e.logger = slog.Default()
	}
	reg := opts.Registry
	var err error
	if e.cacheLookups, err = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_query_cache_total", Help: "Query cache lookups by result (hit, miss)."}, []string{"result"})); err != nil {
		return nil, err
	}
	if e.bucketUse, err = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_query_buckets_total", Help: "Windows (or rollup buckets) of JSON answers: their encoded rows reused from the query cache, or computed and kept."}, []string{"result"})); err != nil {
		return nil, err
	}
	if e.computing, err = metrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "braid_query_computations_running", Help: "Answers being computed and reads of speed cells in progress."})); err != nil {
		return nil, err
	}
	if e.computations, err = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_query_computations_total", Help: "Computations of answers (or of parts of JSON answers) by result: done, cancelled (every client waiting for it left), too_large (beyond http.query_max_cells or http.query_max_rows), failed."}, []string{"result"})); err != nil {
		return nil, err
	}
	for _, r := range []string{"done", "cancelled", "too_large", "failed"} {
		e.computations.WithLabelValues(r)
	}
	if e.shared, err = metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "braid_query_shared_total", Help: "Queries (and live queries) that waited for a computation or a read of speed cells already running for another one instead of starting their own."})); err != nil {
		return nil, err
	}
	if e.liveQueries, err = metrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "braid_live_queries", Help: "Distinct live queries (view and parameters) with connected clients: each is recomputed once per change, for all its clients."})); err != nil {
		return nil, err
	}
	if opts.CacheBytes > 0 {
		e.cache = newByteLRU(opts.CacheBytes)
	}
	if e.views != nil {
		if _, err := metrics.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "braid_batch_view_rows_loaded", Help: "Batch view rows held in memory for queries."},
			func() float64 { return float64(e.views.LoadedRows()) })); err != nil {
			return nil, err
		}
	}
	e.bgCtx, e.bgCancel = context.WithCancel(context.Background())
	e.answers = newFlights[*cachedAnswer](e.bgCtx, e.shared.Inc)
	e.bodies = newFlights[*Body](e.bgCtx, e.shared.Inc)
	e.snapshots = newFlights[*speedSnapshot](e.bgCtx, e.shared.Inc)
	e.hub = newHub(e)
	if e.views != nil {
		go e.warmVersions(e.bgCtx, e.poll)
	}
	return e, nil
}

// Close stops the engine's background work: computations in progress and
// live queries end.
func (e *Engine) Close() error {
	e.bgCancel()
	return nil
}

// ViewState decides whether view v can answer at the batch version ver
// (nil: none) and the speed position pos, given the layers this engine
// reads (StateOf).
func (e *Engine) ViewState(v *logic.View, ver *batchviews.Version, pos StreamSpeed) ViewState {
	return StateOf(v, ver, pos, e.speed != nil && e.status != nil, e.views != nil)
}

// Ready reports whether view v can answer now: nil, a *RebuildingError
// while it is rebuilding, or ErrUnavailable (wrapped) when its inputs
// cannot be read.
func (e *Engine) Ready(ctx context.Context, v *logic.View) error {
	_, err := e.readInputs(ctx, v)
	return err
}

// Answer answers q of view v in its format (q.Format): from the answer
// cache; else, for JSON, assembled from the final buckets' encoded rows
// and the open buckets (buckets.go); else computed whole and encoded.
// Queries of one answer asking at once share its computation, which stops
// when none of them waits any more; ctx ending returns ctx's error.
//
// Errors: a *RebuildingError when the view cannot answer yet, a
// *TooLargeError beyond the budget, ErrUnavailable (wrapped) when a store
// cannot be read now; any other error is a failure of the engine or of
// the stores' contents.
func (e *Engine) Answer(ctx context.Context, v *logic.View, q Query) (*Body, error) {
	in, err := e.readInputs(ctx, v)
	if err != nil {
		return nil, err
	}
	if key := e.answerKey(v, q, in); q.Format == "json" && key != "" {
		key += "|body"
		if x, ok := e.cache.get(key); ok {
			e.cacheLookups.WithLabelValues("hit").Inc()
			return x.(*Body), nil
		}
		// Queries of one answer asking while it is assembled share that
		// work, which stops when none of them waits any more.
		body, err := e.bodies.do(ctx, key, func(ctx context.Context) (*Body, error) {
			body, ok, err := e.answerJSON(ctx, v, q, in)
			if err != nil || !ok {
				return nil, err // nil: not on this path
			}
			e.cache.put(key, body, int64(body.fresh+24*len(body.pieces)))
			return body, nil
		})
		if err != nil {
			return nil, err
		}
		if body != nil {
			e.cacheLookups.WithLabelValues("miss").Inc()
			return body, nil
		}
	}
	ca, err := e.lookupWith(ctx, v, q, in)
	if err != nil {
		return nil, err
	}
	b, err := ca.encoded(q.Format)
	if err != nil {
		return nil, fmt.Errorf("encode answer as %s: %w", q.Format, err)
	}
	return &Body{pieces: [][]byte{b}, size: len(b), fresh: len(b), warnings: ca.a.Warnings}, nil
}

// answer is a computed query answer.
type answer struct {
	View      *logic.View
	Query     Query
	Cutoff    int64  // 0: no batch
	Watermark int64  // 0: unknown
	Version   string // batch version id ("": none)
	Seq       uint64 // the speed position the answer was computed at (0: unknown)
	Rows      []ResultRow
	Warnings  []string
}

// inputs are what an answer depends on besides the stores' contents: the
// batch version and the stream's speed position (read first, cheaply), and
// the view's state they give.
type inputs struct {
	ver   *batchviews.Version
	pos   StreamSpeed
	posOK bool // the position was read (else: no speed status; not cacheable)
	state ViewState
}

// readInputs reads a view's inputs; a view that cannot answer yet is a
// *RebuildingError.
func (e *Engine) readInputs(ctx context.Context, v *logic.View) (inputs, error) {
	var in inputs
	if e.views != nil {
		ver, err := e.views.Current()
		if err != nil {
			return in, fmt.Errorf("%w: batch views: %w", ErrUnavailable, err)
		}
		in.ver = ver
	}
	speed := e.speed != nil && e.status != nil
	switch {
	case v.Tier != logic.TierLive:
		in.posOK = true // a batch-tier view: the batch version alone determines the answer
	case e.status != nil:
		pos, err := e.status.StreamStatus(ctx, v.Stream.Name)
		if err != nil {
			return in, fmt.Errorf("%w: speed position: %w", ErrUnavailable, err)
		}
		in.pos, in.posOK = pos, true
	case e.speed == nil:
		in.posOK = true // no speed layer at all: the batch version alone determines the answer
	}
	in.state = StateOf(v, in.ver, in.pos, speed, e.views != nil)
	if !in.state.Ready {
		return in, &RebuildingError{View: v.Name, Progress: in.state.Progress}
	}
	return in, nil
}

// compute computes a view's merged answer: the batch version's rows for
// the view (cutoff C) ⊕ the speed cells of epochs >= C (none for a
// batch-tier view), rolled up, within the budget b (a *TooLargeError
// beyond it). The position (hence the
// watermark) is read before the cells: a commit moves cells and position
// together, so a window marked final has all its cells.
func (e *Engine) compute(ctx context.Context, v *logic.View, q Query, in inputs, b *budget) (*answer, error) {
	e.computing.Inc()
	defer e.computing.Dec()
	a, err := e.computeAnswer(ctx, v, q, in, b)
	result := "done"
	if _, tooLarge := isTooLarge(err); tooLarge {
		result = "too_large"
	} else if err != nil && ctx.Err() != nil {
		result = "cancelled"
	} else if err != nil {
		result = "failed"
	}
	e.computations.WithLabelValues(result).Inc()
	return a, err
}

func (e *Engine) computeAnswer(ctx context.Context, v *logic.View, q Query, in inputs, b *budget) (*answer, error) {
	a := &answer{View: v, Query: q, Seq: in.pos.Seq}
	var batch []batchviews.Row
	if e.views != nil {
		if ver := in.ver; ver != nil {
			a.Version = ver.ID
			if vv := in.state.Batch; vv != nil && vv.Cutoff > 0 {
				a.Cutoff = vv.Cutoff
				var err error
				if batch, err = e.views.Rows(ctx, ver, v, q.From, q.To); err != nil {
					return nil, fmt.Errorf("%w: batch rows: %w", ErrUnavailable, err)
				}
				if err := b.addCells(len(batch)); err != nil {
					return nil, err
				}
			}
		}
	} else {
		a.Warnings = append(a.Warnings, "batch views unavailable: answer from the speed layer only")
	}
	if in.posOK {
		a.Watermark = Watermark(v, in.state, in.pos)
	}
	var cells []SpeedCell
	switch {
	case v.Tier != logic.TierLive:
		// A batch-tier view keeps no speed cells: its answer is the batch rows.
	case e.speed != nil:
		var err error
		if cells, err = e.speedCells(ctx, v, q.From, q.To, a.Cutoff, in, b); err != nil {
			if _, tooLarge := isTooLarge(err); tooLarge || ctx.Err() != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: speed cells: %w", ErrUnavailable, err)
		}
	default:
		a.Warnings = append(a.Warnings, "speed layer unavailable: answer from the batch views only")
	}
	merged, err := Merge(v, a.Cutoff, batch, cells, a.Watermark)
	if err != nil {
		return nil, err
	}
	batch, cells = nil, nil
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rows, err := Apply(v, merged, q.Rollup, a.Watermark)
	if err != nil {
		return nil, err
	}
	if err := b.addRows(len(rows)); err != nil {
		return nil, err
	}
	a.Rows = OrderLimit(rows, q.Order, q.Desc, q.Limit)
	a.Warnings = append(a.Warnings, overflowWarnings(v, a.Rows)...)
	return a, nil
}
