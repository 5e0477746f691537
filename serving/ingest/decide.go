package ingest

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/metrics"
)

// Decisions at ingest. Once every event of a request is prepared, the
// stream's rules (config.Catalog.Rules: logic.Decide, the most severe
// outcome of the rules that matched) decide each valid event, reading
// its fields and the features of its entity keys. The features are read
// before any rule runs, one Features lookup per entity for the distinct
// keys of the whole request, so a request of a hundred events makes one
// round trip per entity, not a hundred. Then:
//
//   - allow: the event is stored in the clean log, as without decisions;
//   - review: stored in the clean log, and kept on the stream's review
//     subject with the rules that matched;
//   - block: kept on the stream's blocked subject only: no view, lake,
//     feature or count of the clean log sees it.
//
// The decided events are stored before the clean ones (path.go) and the
// answer waits for both: it still means "durable". A decided event keeps
// its own id, or, without one, an id naming its place in the request, so a
// retried request keeps it once; the clean log's id window never sees a
// blocked id, so a retry is decided, and blocked, again.

// Decision is the outcome of the stream's rules for the valid event at
// Index (in the request): allow, review or block, and the names of the
// rules that matched (empty when none did), in the stream's rule order.
type Decision struct {
	Index   int      `json:"index"`
	Outcome string   `json:"outcome"`
	Rules   []string `json:"rules"`
}

// decisions is what a request's decisions came to.
type decisions struct {
	list    []Decision // one per valid event
	blocked int
	review  int
	matched map[string]int // rule name → events it matched
	took    time.Duration  // features and rules
}

// entityLookup is an entity's features for the events of a request.
type entityLookup struct {
	e    *logic.Entity
	keys []string                 // distinct keys, in first-seen order
	at   []int                    // per held event: index in keys, -1 without a key
	vals []map[string]logic.Value // per key (nil: all null)
}

// decide decides the held events of p with rules: it reads their
// entities' features, evaluates the rules, and leaves in p.recs the events
// for the clean log and in p.decided those to keep aside.
func (in *Ingester) decide(ctx context.Context, s *logic.Stream, rules []*logic.Rule, p *pass, source string) (decisions, error) {
	t0 := time.Now()
	d := decisions{list: make([]Decision, 0, len(p.held))}
	if len(rules) == 0 {
		for _, i := range p.heldIdx {
			d.list = append(d.list, Decision{Index: i, Outcome: logic.Allow.String(), Rules: []string{}})
		}
		d.took = time.Since(t0)
		return d, nil
	}
	lookups, err := in.lookups(ctx, rules, p.held)
	if err != nil {
		return decisions{}, err
	}
	kept := p.recs[:0] // the clean records, in place: each is read before it is overwritten
	var cur int        // the event being decided, for features
	features := func(entity, name string) logic.Value {
		for i := range lookups {
			l := &lookups[i]
			if l.e.Name != entity {
				continue
			}
			if k := l.at[cur]; k >= 0 && l.vals != nil {
				return l.vals[k][name]
			}
			return logic.Value{}
		}
		return logic.Value{}
	}
	now := p.now.UTC()
	for j := range p.held {
		cur = j
		rec := p.recs[j]
		o, matched := logic.Decide(rules, &p.held[j], features)
		if matched == nil {
			matched = []string{}
		}
		d.list = append(d.list, Decision{Index: p.heldIdx[j], Outcome: o.String(), Rules: matched})
		for _, r := range matched {
			if d.matched == nil {
				d.matched = map[string]int{}
			}
			d.matched[r]++
		}
		if o != logic.Block {
			kept = append(kept, rec)
		}
		if o == logic.Allow {
			continue
		}
		if o == logic.Block {
			d.blocked++
		} else {
			d.review++
		}
		id := rec.ID
		if id == "" {
			id = DecidedID(s, source, p.heldIdx[j], rec.Data)
		}
		p.decided = append(p.decided, eventlog.Decided{ID: id, Outcome: o.String(), Rules: matched, Source: source, Time: now, Event: rec.Data})
	}
	clear(p.recs[len(kept):])
	p.recs = kept
	p.held, p.heldIdx = nil, nil
	d.took = time.Since(t0)
	return d, nil
}

// lookups reads the features of the entities the rules read, for the
// keys of events: one Features lookup per entity.
func (in *Ingester) lookups(ctx context.Context, rules []*logic.Rule, events []logic.Event) ([]entityLookup, error) {
	var out []entityLookup
	for _, r := range rules {
		if r.Entity == nil || hasEntity(out, r.Entity) {
			continue
		}
		l := entityLookup{e: r.Entity, at: make([]int, len(events))}
		index := map[string]int{}
		for j := range events {
			key, ok := r.Entity.KeyOf(&events[j])
			if !ok {
				l.at[j] = -1
				continue
			}
			k, seen := index[key]
			if !seen {
				k = len(l.keys)
				index[key] = k
				l.keys = append(l.keys, key)
			}
			l.at[j] = k
		}
		if in.features != nil && len(l.keys) > 0 {
			vals, err := in.features.Lookup(ctx, l.e.Name, l.keys)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrFeatures, l.e.Name, err)
			}
			if len(vals) != len(l.keys) {
				return nil, fmt.Errorf("%w: %s: %d answers for %d keys", ErrFeatures, l.e.Name, len(vals), len(l.keys))
			}
			l.vals = vals
		}
		out = append(out, l)
	}
	return out, nil
}

func hasEntity(ls []entityLookup, e *logic.Entity) bool {
	for i := range ls {
		if ls[i].e == e {
			return true
		}
	}
	return false
}

func ruleNames(rules []*logic.Rule) []string {
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.Name
	}
	return names
}

// DecidedID names a decided event that has no id by where it came from
// (source), its index in the request and its canonical record (a keyed
// digest: it may hold PII), so that a retried request keeps it once
// (within the log's dedup window) while two identical events of one
// request stay two.
func DecidedID(s *logic.Stream, source string, index int, rec []byte) string {
	var b [3 + 32]byte
	var n [20]byte
	id := append(b[:0], "dc:"...)
	id = s.AppendDigest(id, []byte(source), strconv.AppendInt(n[:0], int64(index), 10), rec)
	return string(id)
}

// decideMetrics are the decisions' metrics.
type decideMetrics struct {
	outcomes *prometheus.CounterVec   // braid_decisions_total{stream,outcome}
	matches  *prometheus.CounterVec   // braid_rule_matches_total{stream,rule,outcome}
	duration *prometheus.HistogramVec // braid_decide_duration_seconds{stream}
}

func newDecideMetrics(reg prometheus.Registerer) decideMetrics {
	m := decideMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_decisions_total",
			Help: "Events decided at ingest (decide=true), by stream and outcome (allow, review, block)."}, []string{"stream", "outcome"}),
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_rule_matches_total",
			Help: "Events a rule matched at ingest, by stream, rule and the rule's outcome."}, []string{"stream", "rule", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "braid_decide_duration_seconds",
			Help:    "Time to decide a request's events at ingest: reading the entities' features and evaluating the rules (storing excluded).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16)}, []string{"stream"}),
	}
	if c, err := metrics.Register(reg, m.outcomes); err == nil {
		m.outcomes = c
	}
	if c, err := metrics.Register(reg, m.matches); err == nil {
		m.matches = c
	}
	if c, err := metrics.Register(reg, m.duration); err == nil {
		m.duration = c
	}
	return m
}

// count adds a request's decisions on a stream.
func (m decideMetrics) count(stream string, d decisions, rules []*logic.Rule) {
	allow := len(d.list) - d.blocked - d.review
	m.outcomes.WithLabelValues(stream, logic.Allow.String()).Add(float64(allow))
	m.outcomes.WithLabelValues(stream, logic.Review.String()).Add(float64(d.review))
	m.outcomes.WithLabelValues(stream, logic.Block.String()).Add(float64(d.blocked))
	for _, r := range rules {
		if n := d.matched[r.Name]; n > 0 {
			m.matches.WithLabelValues(stream, r.Name, r.Outcome.String()).Add(float64(n))
		}
	}
	m.duration.WithLabelValues(stream).Observe(d.took.Seconds())
}
