package alerts

import (
	"encoding/json"
	"math"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/alertbox"
)

// What an alert decides for one row (a window and a group) of its view,
// each time it evaluates the merged rows — a pure function of the row, the
// batch version it was computed at and the row's state (rowState), tested
// without servers:
//
//   - firing: the condition holds and the row never fired (on: speed: the
//     row first crosses; on: final: only final rows are evaluated). A row
//     fires once: its id is <alert>/<window>/<group>/firing.
//   - resolved: the row fired, is firing, and the condition no longer
//     holds (once, like firing).
//   - corrected: the row fired, its window is final, and at a new batch
//     version its values differ from those of its baseline — the values
//     it had when its window was final (or when it was last corrected).
//     Its id carries the batch version, so a row is corrected at most once
//     per batch version. Values of a final window change when a batch run
//     absorbs events the speed layer did not fold (too late for it, or
//     sketches made exact) — the baseline is what the speed layer said —
//     or, rarely, when an idle partition's event lands in it.
//   - a baseline (never delivered): the values of a fired row when its
//     window became final, unless a delivery of that evaluation carried
//     them.
//
// Every decision is stored in the outbox before the state moves on, and
// the state is exactly what the stored records fold to (fold), so an
// evaluator that restarts rebuilds it from the outbox and decides nothing
// twice; what it decided again after a crash carries the same id.

// Record states that are not deliveries.
const stateBaseline = "baseline"

// rowKey names a row: its window start and group key (logic.GroupKey).
type rowKey struct {
	window int64
	group  string
}

// rowState is what an alert remembers of a row that fired.
type rowState struct {
	firing   bool // fired and not resolved
	resolved bool
	hasBase  bool
	base     []any // the baseline's values, in the view's measure order
	baseVer  string
}

func (s rowState) fired() bool { return s.firing || s.resolved }

// decision is one record to store for a row.
type decision struct {
	state   string // logic.AlertFiring, AlertResolved, AlertCorrected or stateBaseline
	version string // the batch version (ids of corrections and baselines)
}

// decide returns what to store for row r of alert a at batch version
// version, given the row's state s, and the state once it is stored.
func decide(a *logic.Alert, s rowState, r *query.ResultRow, version string) ([]decision, rowState) {
	if a.On == logic.OnFinal && !r.Final {
		return nil, s
	}
	holds := a.When.Eval(getter(a.View, r))
	var out []decision
	switch {
	case holds && !s.fired():
		out = append(out, decision{state: logic.AlertFiring, version: version})
		s.firing = true
	case !holds && s.firing:
		out = append(out, decision{state: logic.AlertResolved, version: version})
		s.firing, s.resolved = false, true
	}
	if !s.fired() || !r.Final {
		return out, s
	}
	switch {
	case s.hasBase && version != s.baseVer && !sameValues(r.Values, s.base):
		out = append(out, decision{state: logic.AlertCorrected, version: version})
	case s.hasBase && len(out) == 0:
		// Nothing new: the same batch version, or one that left the
		// values alone. (The baseline keeps its version: a change the
		// speed layer makes to a final window later — an event of a
		// partition that was idle — is corrected at the version of then,
		// as an evaluator rebuilt from the stored records would.)
		return out, s
	case !s.hasBase && len(out) == 0:
		out = append(out, decision{state: stateBaseline, version: version})
	}
	s.hasBase, s.base, s.baseVer = true, r.Values, version
	return out, s
}

// fold applies a stored record of the row to its state: what decide's
// state became when it decided the record.
func fold(s *rowState, r alertbox.Record, values []any) {
	switch r.State {
	case logic.AlertFiring:
		s.firing = true
	case logic.AlertResolved:
		s.firing, s.resolved = false, true
	}
	if r.Final {
		s.hasBase, s.base, s.baseVer = true, values, r.Version
	}
}

// recordID is the id of a decision for a row: logic.AlertID, and for a
// baseline the batch version after its state.
func recordID(a *logic.Alert, k rowKey, d decision) string {
	if d.state == stateBaseline {
		return logic.AlertID(a.Name, k.window, k.group, d.state, "") + "/" + d.version
	}
	return logic.AlertID(a.Name, k.window, k.group, d.state, d.version)
}

// getter reads a row's dimensions and measures by name for a condition.
func getter(v *logic.View, r *query.ResultRow) func(string) logic.Value {
	return func(name string) logic.Value {
		for i, d := range v.Dims {
			if d == name && i < len(r.Dims) {
				return r.Dims[i]
			}
		}
		for i := range v.Measures {
			if v.Measures[i].Name == name && i < len(r.Values) {
				return valueOf(v.Measures[i].ResultType(), r.Values[i])
			}
		}
		return logic.Value{}
	}
}

// valueOf turns a finalized measure (int64, float64, string, bool,
// time.Time — last/first of a time field — or nil; numbers of JSON as
// float64, times as RFC 3339 strings) into a Value of type t; NaN and
// infinities are null.
func valueOf(t logic.FieldType, x any) logic.Value {
	switch v := x.(type) {
	case int64:
		if t == logic.TypeFloat {
			return logic.Value{Kind: logic.TypeFloat, F: float64(v)}
		}
		return logic.Value{Kind: t, I: v}
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return logic.Value{}
		}
		if t == logic.TypeFloat {
			return logic.Value{Kind: logic.TypeFloat, F: v}
		}
		return logic.Value{Kind: t, I: int64(v)}
	case string:
		if t == logic.TypeTime {
			if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return logic.Value{Kind: logic.TypeTime, I: ts.UnixMilli()}
			}
			return logic.Value{}
		}
		return logic.Value{Kind: logic.TypeString, S: v}
	case time.Time:
		return logic.Value{Kind: logic.TypeTime, I: v.UnixMilli()}
	case bool:
		if v {
			return logic.Value{Kind: logic.TypeBool, I: 1}
		}
		return logic.Value{Kind: logic.TypeBool}
	case json.Number:
		if f, err := v.Float64(); err == nil {
			return valueOf(t, f)
		}
	}
	return logic.Value{}
}

// sameValues reports whether two rows' measures are the same: numbers
// equal within a relative 1e-9 (the two layers add floats in different
// orders), nulls (nil, NaN, infinities) alike, other values equal.
func sameValues(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, xk := norm(a[i])
		y, yk := norm(b[i])
		switch {
		case xk != yk:
			return false
		case xk == kNum:
			if math.Abs(x.(float64)-y.(float64)) > 1e-9*math.Max(1, math.Max(math.Abs(x.(float64)), math.Abs(y.(float64)))) {
				return false
			}
		case xk == kOther && x != y:
			return false
		}
	}
	return true
}

const (
	kNull = iota
	kNum
	kOther
)

// norm sorts a measure's value: a finite number (as a float64), null, or
// another value (a string, a bool).
func norm(x any) (any, int) {
	var f float64
	switch v := x.(type) {
	case nil:
		return nil, kNull
	case int64:
		f = float64(v)
	case float64:
		f = v
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return v.String(), kOther
		}
	default:
		return x, kOther
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, kNull
	}
	return f, kNum
}
