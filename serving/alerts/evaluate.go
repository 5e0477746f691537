package alerts

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/alertbox"
)

// evaluator is one owned alert's evaluation: the state of its rows that
// fired, within its range.
type evaluator struct {
	s    *Service
	a    *logic.Alert
	rows map[rowKey]*rowState

	// What the last evaluations saw: the batch version and when the
	// whole range was evaluated last, and the watermark of the last one
	// (0: none yet). Between batch versions only windows that were not
	// final then can change (once), so the others wait for the next
	// evaluation of the whole range.
	lastVersion string
	lastFull    time.Time
	lastWM      int64
	firing      map[rowKey]firingRow // the rows firing, as last evaluated

	lastFiring []byte    // the rows firing at the last state recorded
	lastState  time.Time // when it was recorded
	lastWarn   time.Time
}

// evaluate is the work of an alert this process owns: rebuild its state
// from the outbox, then evaluate it at every change of its view's inputs
// (and at least every defaults.AlertEvalTick, which slides its range)
// until ctx ends. An error rebuilding is returned (the alert is taken up
// again after a pause); an evaluation that fails is tried again at the
// next change or tick.
func (s *Service) evaluate(ctx context.Context, name string) error {
	a := s.cat.Alerts[name]
	if a == nil {
		<-ctx.Done()
		return nil
	}
	ev := &evaluator{s: s, a: a, rows: map[rowKey]*rowState{}, firing: map[rowKey]firingRow{}}
	n, err := ev.rebuild(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.logger.Info("evaluating alert", "alert", name, "view", a.View.Name, "on", a.On.String(), "records_read", n, "rows_fired", len(ev.rows))
	changes, stop := s.o.Source.Watch(a.View.Stream.Name)
	defer stop()
	tick := time.NewTicker(defaults.AlertEvalTick)
	defer tick.Stop()
	for {
		if err := ev.once(ctx); err != nil && ctx.Err() == nil {
			ev.warn(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-tick.C:
		}
	}
}

// warn logs a failed evaluation, at most every 30 s (a view rebuilding
// at debug level).
func (ev *evaluator) warn(err error) {
	var reb *query.RebuildingError
	if errors.As(err, &reb) {
		ev.s.logger.Debug("alert not evaluated: its view is rebuilding", "alert", ev.a.Name, "err", err)
		return
	}
	if time.Since(ev.lastWarn) < 30*time.Second {
		return
	}
	ev.lastWarn = time.Now()
	ev.s.logger.Warn("alert evaluation failed; trying again", "alert", ev.a.Name, "err", err)
}

// rebuild folds the outbox's records of the alert's range into its state
// and returns how many it read.
func (ev *evaluator) rebuild(ctx context.Context) (int, error) {
	a := ev.a
	from, _ := a.AlertRange(time.Now().UnixMilli(), ev.s.o.BatchEvery)
	// A row of a window starting at from was decided at the earliest when
	// an event stamped that far ahead of its arrival came (max_future).
	since := time.UnixMilli(from).Add(-a.View.Stream.WatermarkLead() - time.Minute)
	n := 0
	err := ev.s.o.Outbox.Records(ctx, a.Name, since, func(r alertbox.Record) error {
		n++
		if r.Window < from {
			return nil
		}
		k := rowKey{r.Window, r.Group}
		st := ev.rows[k]
		if st == nil {
			st = &rowState{}
			ev.rows[k] = st
		}
		var vals []any
		if r.Final {
			vals = bodyValues(a.View, r.Body)
		}
		fold(st, r, vals)
		return nil
	})
	return n, err
}

// once evaluates the alert's rows now: the whole range when the batch
// version changed, at the first evaluation and every
// defaults.AlertFullEvery; else the windows that were not final at the
// last one. Every decision is stored before the row's state moves on;
// the first that cannot be stored ends the evaluation with its error.
func (ev *evaluator) once(ctx context.Context) error {
	a, s := ev.a, ev.s
	start := time.Now()
	now := start.UnixMilli()
	from, to := a.AlertRange(now, s.o.BatchEvery)
	full := ev.lastWM == 0 || start.Sub(ev.lastFull) >= defaults.AlertFullEvery
	qFrom := from
	if !full {
		// Windows final at the last watermark ended by then.
		qFrom = max(from, windowFloor(a.View, ev.lastWM-a.View.Window.Size.Milliseconds()))
	}
	ans, err := s.o.Source.Rows(ctx, a.View, query.Query{Rollup: query.Rollup{From: qFrom, To: to}, Order: -1, Format: "json"})
	if err == nil && !full && ans.Version != ev.lastVersion {
		full, qFrom = true, from
		ans, err = s.o.Source.Rows(ctx, a.View, query.Query{Rollup: query.Rollup{From: from, To: to}, Order: -1, Format: "json"})
	}
	if err != nil {
		return err
	}
	if full {
		for k := range ev.rows {
			if k.window < from {
				delete(ev.rows, k)
			}
		}
		for k := range ev.firing {
			if k.window < from {
				delete(ev.firing, k)
			}
		}
	}
	for i := range ans.Rows {
		r := &ans.Rows[i]
		k := rowKey{r.Window, logic.GroupKey(r.Dims)}
		var cur rowState
		if st := ev.rows[k]; st != nil {
			cur = *st
		}
		ds, next := decide(a, cur, r, ans.Version)
		for _, d := range ds {
			id := recordID(a, k, d)
			rec := alertbox.Record{Kind: alertbox.KindDelivery, ID: id, Alert: a.Name, Window: r.Window, Group: k.group, State: d.state,
				Version: d.version, Final: r.Final, Decided: now, Arrival: ans.Arrival, Body: makeBody(a, id, d.state, r, now)}
			if d.state == stateBaseline {
				rec.Kind = alertbox.KindBaseline
			}
			if err := s.o.Outbox.Publish(ctx, rec); err != nil {
				return err
			}
			if rec.Kind == alertbox.KindDelivery {
				s.m.firings.WithLabelValues(a.Name, d.state).Inc()
				s.logger.Info("alert decided", "alert", a.Name, "state", d.state, "id", id, "source", r.Source, "final", r.Final)
			}
		}
		if next.fired() {
			ev.rows[k] = &next
		}
		if next.firing {
			ev.firing[k] = firingRow{ID: logic.AlertID(a.Name, r.Window, k.group, logic.AlertFiring, ""),
				WindowStart: logic.FormatTime(r.Window), Group: groupMap(a.View, r.Dims), Values: valueMap(a.View, r.Values),
				Source: r.Source, Exact: r.Exact, Final: r.Final}
		} else {
			delete(ev.firing, k)
		}
	}
	if full {
		ev.lastFull, ev.lastVersion = start, ans.Version
	}
	ev.lastWM = ans.Watermark
	s.m.evalDur.WithLabelValues(a.Name).Observe(time.Since(start).Seconds())
	return ev.record(ctx, ans)
}

// firingRow is a row firing now, as GET /v1/alerts shows it.
type firingRow struct {
	ID          string         `json:"id"`
	WindowStart string         `json:"window_start"`
	Group       map[string]any `json:"group"`
	Values      map[string]any `json:"values"`
	Source      string         `json:"source"`
	Exact       bool           `json:"exact"`
	Final       bool           `json:"final"`
}

// evalState is what the evaluator records of an alert for GET /v1/alerts.
type evalState struct {
	Evaluator   string      `json:"evaluator"`
	EvaluatedAt string      `json:"evaluated_at"`
	Version     string      `json:"batch_version"`
	Watermark   *string     `json:"watermark"`
	Firing      []firingRow `json:"firing"`
}

// record writes the rows firing now to the journal when they changed, or
// every defaults.AlertStateEvery.
func (ev *evaluator) record(ctx context.Context, ans query.RowsAnswer) error {
	if ev.s.o.Journal == nil {
		return nil
	}
	keys := slices.SortedFunc(maps.Keys(ev.firing), func(x, y rowKey) int {
		return cmp.Or(cmp.Compare(x.window, y.window), cmp.Compare(x.group, y.group))
	})
	firing := make([]firingRow, 0, len(keys))
	for _, k := range keys {
		firing = append(firing, ev.firing[k])
	}
	cur, _ := json.Marshal(firing)
	if bytes.Equal(cur, ev.lastFiring) && time.Since(ev.lastState) < defaults.AlertStateEvery {
		return nil
	}
	st := evalState{Evaluator: ev.s.o.Owner, EvaluatedAt: logic.FormatTime(time.Now().UnixMilli()), Version: ans.Version, Firing: firing}
	if ans.Watermark > 0 {
		w := logic.FormatTime(ans.Watermark)
		st.Watermark = &w
	}
	data, _ := json.Marshal(st)
	if err := ev.s.o.Journal.SetState(ctx, ev.a.Name, data); err != nil {
		return err
	}
	ev.lastFiring, ev.lastState = cur, time.Now()
	return nil
}

// windowFloor is the start of the last window of v starting at or before
// t (windows start every hop, or every size when tumbling, from the UTC
// epoch).
func windowFloor(v *logic.View, t int64) int64 {
	step := v.Window.Step().Milliseconds()
	r := t % step
	if r < 0 {
		r += step
	}
	return t - r
}
