package logic

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MeasureKind names an aggregate.
type MeasureKind uint8

// The measures a view may compute.
const (
	Count MeasureKind = iota + 1
	Sum
	Avg
	Min
	Max
	CountDistinct
	Quantile
	Last  // the value of the event with the greatest event time (ties: the later arrival)
	First // the value of the event with the least event time (ties: the earlier arrival)
)

var measureNames = map[string]MeasureKind{"count": Count, "sum": Sum, "avg": Avg, "min": Min, "max": Max, "count_distinct": CountDistinct, "quantile": Quantile, "last": Last, "first": First}

func (k MeasureKind) String() string {
	for n, m := range measureNames {
		if m == k {
			return n
		}
	}
	return "unknown"
}

// SlotOp is how a numeric state slot combines: every slot is a commutative
// monoid, so deltas can be merged in any order and any grouping.
type SlotOp uint8

// Slot operations.
const (
	OpAdd SlotOp = iota // identity 0
	OpMin               // identity: empty (NaN)
	OpMax               // identity: empty (NaN)
)

// Slot is one numeric component of a measure's state.
type Slot struct {
	Op  SlotOp
	SQL string // the DuckDB aggregate computing this slot over raw rows
}

// Identity returns the slot's empty value.
func (s Slot) Identity() float64 {
	if s.Op == OpAdd {
		return 0
	}
	return math.NaN()
}

// Merge combines two slot values.
func (s Slot) Merge(a, b float64) float64 {
	switch s.Op {
	case OpMin:
		if math.IsNaN(a) || b < a {
			return b
		}
		return a
	case OpMax:
		if math.IsNaN(a) || b > a {
			return b
		}
		return a
	}
	return a + b
}

// MeasureDef is a measure as the configuration names it: name: expr.
type MeasureDef struct {
	Name string
	Expr string // count(), sum(amount), quantile(amount, 0.95), ...
}

// Measure is a compiled measure of a view.
type Measure struct {
	Name  string
	Kind  MeasureKind
	Field string // "" for count()
	Q     float64
	Slots []Slot
	Off   int // offset of the first slot in the view's numeric state
	// ExactIdx is where State.Exact holds the measure's exact value (a
	// sketch measure's, in a batch row): its rank in the view's canonical
	// order of measures, like Off.
	ExactIdx int
	// Sketch is the index of the measure's sketch in the view's distinct
	// (count_distinct) or quantile sketches; measures over the same field
	// share one. -1 for the numeric measures.
	Sketch int
	// Pick is the index of a last or first measure's pick in State.Picks
	// (View.Picks; measures of one kind over one field share one); -1 for
	// the others.
	Pick int

	field int // index in the stream's fields, -1 for count()
	ftype FieldType
}

// ParseMeasure compiles "kind(field[, q])" against a stream.
func ParseMeasure(def MeasureDef, s *Stream) (Measure, error) {
	expr := strings.TrimSpace(def.Expr)
	open := strings.IndexByte(expr, '(')
	if open < 0 || !strings.HasSuffix(expr, ")") {
		return Measure{}, fmt.Errorf("measure %q: want kind(field), e.g. sum(amount)", expr)
	}
	kind, ok := measureNames[strings.TrimSpace(expr[:open])]
	if !ok {
		return Measure{}, fmt.Errorf("measure %q: unknown kind %q (want count, sum, avg, min, max, count_distinct, quantile, last or first)", expr, expr[:open])
	}
	var args []string
	if inner := strings.TrimSpace(expr[open+1 : len(expr)-1]); inner != "" {
		for _, a := range strings.Split(inner, ",") {
			args = append(args, strings.TrimSpace(a))
		}
	}
	m := Measure{Name: def.Name, Kind: kind, field: -1, Sketch: -1, Pick: -1}
	want := 1
	switch kind {
	case Count:
		want = 0
		if len(args) == 1 {
			want = 1
		}
	case Quantile:
		want = 2
	}
	if len(args) != want {
		return Measure{}, fmt.Errorf("measure %q: %s takes %d argument(s), got %d", expr, kind, want, len(args))
	}
	if want >= 1 {
		m.Field = args[0]
		m.field = s.FieldIndex(m.Field)
		if m.field < 0 {
			return Measure{}, fmt.Errorf("measure %q: field %q is not declared in stream %s", expr, m.Field, s.Name)
		}
		m.ftype = s.Fields[m.field].Type
		numeric := m.ftype == TypeInt || m.ftype == TypeFloat
		if kind != Count && kind != CountDistinct && kind != Last && kind != First && !numeric {
			return Measure{}, fmt.Errorf("measure %q: %s needs a numeric field, %q is %s", expr, kind, m.Field, m.ftype)
		}
	}
	if kind == Quantile {
		q, err := strconv.ParseFloat(args[1], 64)
		if err != nil || q < 0 || q > 1 {
			return Measure{}, fmt.Errorf("measure %q: quantile must be a number in 0..1", expr)
		}
		m.Q = q
	}
	col := quoteIdent(m.Field)
	switch kind {
	case Count:
		if m.field < 0 {
			m.Slots = []Slot{{Op: OpAdd, SQL: "count(*)"}}
		} else {
			m.Slots = []Slot{{Op: OpAdd, SQL: "count(" + col + ")"}}
		}
	case Sum, Avg:
		m.Slots = []Slot{
			{Op: OpAdd, SQL: "coalesce(sum(" + col + "), 0)"},
			{Op: OpAdd, SQL: "count(" + col + ")"},
		}
	case Min:
		m.Slots = []Slot{{Op: OpMin, SQL: "min(" + col + ")"}}
	case Max:
		m.Slots = []Slot{{Op: OpMax, SQL: "max(" + col + ")"}}
	case CountDistinct, Quantile:
		// No numeric slots: the state is a sketch (see View), and batch rows
		// carry the exact value too (ExactSQL).
	case Last, First:
		// No numeric slots: the state is a pick (pick.go).
	}
	return m, nil
}

// Exact reports whether merged results of this measure are exact: false
// for the sketch measures, which are exact only in a batch row that no
// speed delta or rollup merged into.
func (m *Measure) Exact() bool { return m.Kind != CountDistinct && m.Kind != Quantile }

// ErrorBound states, for a sketch measure, how far its answer may be from
// the exact one wherever the sketch answers ("" for the exact measures).
func (m *Measure) ErrorBound() string {
	switch m.Kind {
	case CountDistinct:
		return fmt.Sprintf("HyperLogLog (Redis-compatible, 16384 registers): standard error %.2f%%; "+
			"about 99.7%% of answers within %.2f%% plus 2", 100*HLLStdError, 300*HLLStdError)
	case Quantile:
		return fmt.Sprintf("log-bucket sketch estimating quantile_cont: within %.0f%% of max(|v_lo|, |v_hi|), "+
			"the values of ranks floor and ceil of q·(n-1) it interpolates between; "+
			"for values of one sign, within %.0f%% (relative) of quantile_cont", 100*QuantileAlpha, 100*QuantileAlpha)
	}
	return ""
}

// ExactSQL is the DuckDB aggregate computing a sketch measure's exact value
// over raw rows ("" for the numeric measures).
func (m *Measure) ExactSQL() string {
	col := quoteIdent(m.Field)
	switch m.Kind {
	case CountDistinct:
		return "count(DISTINCT " + col + ")"
	case Quantile:
		return "quantile_cont(" + col + ", " + strconv.FormatFloat(m.Q, 'g', -1, 64) + ")"
	}
	return ""
}

// fold adds one event's value to the measure's slots in st.
func (m *Measure) fold(st []float64, ev *Event) {
	if m.field < 0 {
		st[m.Off]++
		return
	}
	v := ev.Values[m.field]
	if v.Null() {
		return
	}
	switch m.Kind {
	case Count:
		st[m.Off]++
	case Sum, Avg:
		st[m.Off] += v.Float()
		st[m.Off+1]++
	case Min, Max:
		st[m.Off] = m.Slots[0].Merge(st[m.Off], v.Float())
	}
}

// Finalize turns the measure's state into its answer: int64, float64 or
// nil; a last or first measure answers its field's type: string, int64,
// float64, bool or, for a time field, a time.Time in UTC (nil when no
// event had a value).
// A sketch measure answers its exact value when the state has one (a batch
// row), else the estimate of its sketch. A value its type cannot hold (see
// Overflowed) is nil.
func (m *Measure) Finalize(st *State) any {
	x, _ := m.finalize(st)
	return x
}

// Overflowed reports whether the measure's value in st is beyond what its
// result type holds: a float sum (or the average or quantile built on
// values) past ±math.MaxFloat64, or an int sum outside the int64 range.
// Its answer is then nil. Every value an event carries is finite, so only
// adding them up overflows.
func (m *Measure) Overflowed(st *State) bool {
	_, over := m.finalize(st)
	return over
}

// int64Range is 2^63: float64 values in [-2^63, 2^63) convert to int64.
const int64Range = 1 << 63

func (m *Measure) finalize(st *State) (any, bool) {
	switch m.Kind {
	case Last, First:
		return pickValue(st.Picks[m.Pick].Val), false
	case CountDistinct:
		if st.Exact != nil && !math.IsNaN(st.Exact[m.ExactIdx]) {
			return int64(st.Exact[m.ExactIdx]), false
		}
		if h := st.HLL[m.Sketch]; h != nil {
			return h.Count(), false
		}
		return int64(0), false
	case Quantile:
		if st.Exact != nil {
			x := st.Exact[m.ExactIdx]
			if math.IsNaN(x) {
				return nil, false
			}
			if math.IsInf(x, 0) {
				return nil, true
			}
			return x, false
		}
		if q := st.Q[m.Sketch]; q != nil {
			x := q.Quantile(m.Q)
			if math.IsInf(x, 0) {
				return nil, true
			}
			if !math.IsNaN(x) {
				return x, false
			}
		}
		return nil, false
	}
	s := st.Num[m.Off : m.Off+len(m.Slots)]
	switch m.Kind {
	case Count:
		return int64(s[0]), false
	case Sum:
		if s[1] == 0 {
			return nil, false
		}
		if !finite(s[0]) {
			return nil, true
		}
		if m.ftype == TypeInt {
			if s[0] < -int64Range || s[0] >= int64Range {
				return nil, true
			}
			return int64(s[0]), false
		}
		return s[0], false
	case Avg:
		if s[1] == 0 {
			return nil, false
		}
		if x := s[0] / s[1]; finite(x) {
			return x, false
		}
		return nil, true
	case Min, Max:
		if math.IsNaN(s[0]) {
			return nil, false
		}
		if m.ftype == TypeInt {
			return int64(s[0]), false
		}
		return s[0], false
	}
	return nil, false
}

// OverflowRange describes, for an overflow of the measure, the range its
// values must stay within.
func (m *Measure) OverflowRange() string {
	if m.ResultType() == TypeInt {
		return "the range of a 64-bit integer (magnitude up to 9.2e18)"
	}
	return "the range of a 64-bit float (magnitude up to 1.8e308)"
}

// ResultType is the type of the finalized value: TypeInt or TypeFloat;
// for last and first, the field's type.
func (m *Measure) ResultType() FieldType {
	switch m.Kind {
	case Count, CountDistinct:
		return TypeInt
	case Sum, Min, Max:
		if m.ftype == TypeInt {
			return TypeInt
		}
	case Last, First:
		return m.ftype
	}
	return TypeFloat
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
