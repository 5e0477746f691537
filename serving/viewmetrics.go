package serving

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
)

// viewMetrics is the collector of what each view's freshness costs, read
// at every scrape: braid_view_freshness_seconds{view,tier} (how old the
// newest data behind the view's answers may be: query.Freshness), and,
// from the last measurement of the views' speed state (costs: at most one
// per period, not per scrape), braid_view_speed_cells{view},
// braid_view_speed_keys{view} and braid_view_speed_bytes{view}. A figure
// that cannot be read is left out, and the rest is still collected.
type viewMetrics struct {
	s                                    *Server
	freshness, cells, keys, bytes, exact *prometheus.Desc
}

func newViewMetrics(s *Server) *viewMetrics {
	return &viewMetrics{s: s,
		freshness: prometheus.NewDesc("braid_view_freshness_seconds",
			"How old the newest data behind a view's answers may be: for a live view, 0 while the speed layer has folded every record of the log, else the time since the arrival of the last record it folded; for a batch-tier view, the time since its batch cutoff.",
			[]string{"view", "tier"}, nil),
		cells: prometheus.NewDesc("braid_view_speed_cells",
			"Speed cells (arrival epoch, window, group) a view keeps in Redis (0 for a batch-tier view), as last measured.", []string{"view"}, nil),
		keys: prometheus.NewDesc("braid_view_speed_keys",
			"Redis keys holding a view's speed state, as last measured.", []string{"view"}, nil),
		bytes: prometheus.NewDesc("braid_view_speed_bytes",
			"Redis memory of a view's speed state in bytes (MEMORY USAGE of its keys), as last measured.", []string{"view"}, nil),
		exact: prometheus.NewDesc("braid_view_speed_cost_exact",
			"1 when a view's last speed cost measurement read every key, 0 when it was scaled up from a sample.", []string{"view"}, nil),
	}
}

func (m *viewMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.freshness
	ch <- m.cells
	ch <- m.keys
	ch <- m.bytes
	ch <- m.exact
}

func (m *viewMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), partitionLagTimeout)
	defer cancel()
	s := m.s
	now := time.Now().UnixMilli()
	in := s.freshnessInputs(ctx)
	cat := s.opts.Catalog
	for _, name := range cat.ViewOrder {
		v := cat.Views[name]
		pos := in.pos[v.Stream.Name]
		if ms, ok := query.Freshness(v, s.engine.ViewState(v, in.ver, pos), pos, in.ends[v.Stream.Name], now); ok {
			ch <- prometheus.MustNewConstMetric(m.freshness, prometheus.GaugeValue, float64(ms)/1000, name, v.Tier.String())
		}
	}
	if s.costs == nil {
		return
	}
	measured := s.costs.get(ctx)
	for _, name := range cat.ViewOrder {
		c, ok := measured[name]
		if !ok {
			continue
		}
		exact := 0.0
		if c.Exact {
			exact = 1
		}
		ch <- prometheus.MustNewConstMetric(m.cells, prometheus.GaugeValue, float64(c.Cells), name)
		ch <- prometheus.MustNewConstMetric(m.keys, prometheus.GaugeValue, float64(c.Keys), name)
		ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.GaugeValue, float64(c.Bytes), name)
		ch <- prometheus.MustNewConstMetric(m.exact, prometheus.GaugeValue, exact, name)
	}
}

// freshness are what the views' freshness depends on besides the clock
// (query.Freshness): the current batch version (nil: none, or it could
// not be read), and per stream with live views its speed position and
// its partitions' last log records (absent: unknown).
type freshness struct {
	ver  *batchviews.Version
	pos  map[string]query.StreamSpeed
	ends map[string][]uint64
}

// freshnessInputs reads them: the version, then per stream the position
// before the log's end, so a partition the speed layer has caught up
// with reads as caught up.
func (s *Server) freshnessInputs(ctx context.Context) freshness {
	in := freshness{pos: map[string]query.StreamSpeed{}, ends: map[string][]uint64{}}
	if vs := s.opts.Views; vs != nil {
		if ver, err := vs.Current(); err == nil {
			in.ver = ver
		}
	}
	cat := s.opts.Catalog
	for _, name := range cat.StreamOrder {
		if len(cat.SpeedViewsOf(name)) == 0 {
			continue
		}
		if ss := s.opts.SpeedStatus; ss != nil {
			if pos, err := ss.StreamStatus(ctx, name); err == nil {
				in.pos[name] = pos
			}
		}
		if l := s.opts.Log; l != nil {
			if _, ends, err := readLog(ctx, l, name, cat.Streams[name].Partitions); err == nil {
				in.ends[name] = ends
			}
		}
	}
	return in
}
