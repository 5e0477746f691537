package logic

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ViewDef is a view as the configuration declares it.
type ViewDef struct {
	Stream   string
	Window   time.Duration
	Hop      time.Duration
	GroupBy  []string
	Where    string
	Measures []MeasureDef
	Tier     string // live (default) | batch
}

// Tier is how fresh a view's answers are.
type Tier uint8

// Latency tiers.
const (
	// TierLive views keep speed state: answers are batch ⊕ speed.
	TierLive Tier = iota
	// TierBatch views keep no speed state (and cost no Redis): answers
	// come from the batch layer alone.
	TierBatch
)

func (t Tier) String() string {
	if t == TierBatch {
		return "batch"
	}
	return "live"
}

// View is a compiled view: what the speed layer folds and the batch layer
// computes. It is immutable and safe for concurrent use.
type View struct {
	Name     string
	Stream   *Stream
	Window   Window
	Dims     []string // group-by fields, in declared order
	Measures []Measure
	Where    string
	Tier     Tier
	NumSlots int

	dims     []int
	slots    []Slot
	distinct []int      // stream field of each count_distinct sketch
	quantile []int      // stream field of each quantile sketch
	picks    []pickSpec // each pick (last and first measures)
	where    *Predicate // nil: every event counts
	def      string     // Definition
}

// NewView compiles a view definition against its stream.
func NewView(name string, def ViewDef, s *Stream) (*View, error) {
	var first error
	v := buildView(name, def, s, func(_ string, err error) {
		if first == nil {
			first = err
		}
	})
	if first != nil {
		return nil, first
	}
	return v, nil
}

// CheckView lists every mistake of a view definition, where NewView stops
// at the first, each with its key (see DefError). s may come from
// CheckStream.
func CheckView(name string, def ViewDef, s *Stream) []DefError {
	var errs []DefError
	buildView(name, def, s, func(key string, err error) {
		errs = append(errs, DefError{Key: key, Err: err})
	})
	return errs
}

// buildView compiles a view definition, reporting each mistake with its
// key and going on with the rest; the view is whole only when nothing was
// reported.
func buildView(name string, def ViewDef, s *Stream, report func(key string, err error)) *View {
	v := &View{Name: name, Stream: s, Window: Window{Size: def.Window, Hop: def.Hop}, Where: def.Where}
	bad := false
	fail := func(key string, err error) {
		bad = true
		report(key, err)
	}
	switch def.Tier {
	case "", "live":
	case "batch":
		v.Tier = TierBatch
	default:
		fail("tier", fmt.Errorf("tier: %q is not live or batch", def.Tier))
	}
	if err := v.Window.Validate(); err != nil {
		key := "window"
		if strings.HasPrefix(err.Error(), "hop") {
			key = "hop"
		}
		fail(key, err)
	}
	if strings.TrimSpace(def.Where) != "" {
		p, err := ParseWhere(def.Where, s)
		if err != nil {
			fail("where", err) // *WhereError: "where: at N: ..."
		}
		v.where = p
	}
	seen := map[string]bool{}
	for n, d := range def.GroupBy {
		key := fmt.Sprintf("group_by[%d]", n)
		i := s.FieldIndex(d)
		if i < 0 {
			fail(key, fmt.Errorf("group_by: field %q is not declared in stream %s", d, s.Name))
			continue
		}
		switch s.Fields[i].Type {
		case TypeString, TypeInt, TypeBool:
		default:
			fail(key, fmt.Errorf("group_by: field %q has type %s; dimensions are string, int or bool", d, s.Fields[i].Type))
			continue
		}
		if seen[d] {
			fail(key, fmt.Errorf("group_by: field %q is listed twice", d))
			continue
		}
		if reservedColumn(d) {
			fail(key, fmt.Errorf("group_by: %q is a reserved column name of query rows", d))
			continue
		}
		seen[d] = true
		v.Dims = append(v.Dims, d)
		v.dims = append(v.dims, i)
	}
	if len(def.Measures) == 0 {
		fail("measures", fmt.Errorf("measures: a view needs at least one measure"))
	}
	names := map[string]bool{}
	for _, md := range def.Measures {
		key := "measures"
		if md.Name != "" {
			key += "." + md.Name
		}
		if md.Name == "" || reservedColumn(md.Name) || seen[md.Name] || names[md.Name] {
			fail(key, fmt.Errorf("measures: name %q is empty, reserved, a dimension or used twice", md.Name))
			continue
		}
		names[md.Name] = true
		m, err := ParseMeasure(md, s)
		if err != nil {
			fail(key, err)
			continue
		}
		v.Measures = append(v.Measures, m)
	}
	// The state is laid out in the measures' canonical order, not the
	// declared one, so that renaming or reordering measures keeps it
	// (definition.go). Measures stay in declared order for answers.
	for rank, mi := range canonicalOrder(v.Measures) {
		m := &v.Measures[mi]
		m.Off, m.ExactIdx = v.NumSlots, rank
		switch m.Kind {
		case CountDistinct:
			m.Sketch, v.distinct = sketchFor(v.distinct, m.field)
		case Quantile:
			m.Sketch, v.quantile = sketchFor(v.quantile, m.field)
		case Last, First:
			m.Pick, v.picks = pickFor(v.picks, m.field, m.Kind == Last)
		}
		v.NumSlots += len(m.Slots)
		v.slots = append(v.slots, m.Slots...)
	}
	if len(v.distinct) > maxSketches || len(v.quantile) > maxSketches {
		fail("measures", fmt.Errorf("measures: at most %d count_distinct and %d quantile fields per view", maxSketches, maxSketches))
	}
	if bad || s.TimeField < 0 {
		return v
	}
	v.def = v.fingerprint()
	return v
}

// sketchFor returns the index of field's sketch in list, adding it if new:
// measures over one field share a sketch.
func sketchFor(list []int, field int) (int, []int) {
	for i, f := range list {
		if f == field {
			return i, list
		}
	}
	return len(list), append(list, field)
}

// Sketches is the number of count_distinct and of quantile sketches.
func (v *View) Sketches() (distinct, quantile int) { return len(v.distinct), len(v.quantile) }

// DistinctField and QuantileField name the field of a sketch.
func (v *View) DistinctField(i int) string { return v.Stream.Fields[v.distinct[i]].Name }

// QuantileField names the field of the i-th quantile sketch.
func (v *View) QuantileField(i int) string { return v.Stream.Fields[v.quantile[i]].Name }

func reservedColumn(n string) bool {
	switch n {
	case "window_start", "window_end", "source", "exact", "final", "overflow":
		return true
	}
	return false
}

// Slots returns the view's numeric state slots in order (all measures concatenated).
func (v *View) Slots() []Slot { return v.slots }

// Exact reports whether every measure of the view merges exactly.
func (v *View) Exact() bool {
	for i := range v.Measures {
		if !v.Measures[i].Exact() {
			return false
		}
	}
	return true
}

// CellKey addresses one cell of a speed delta: arrival epoch, window start
// (both unix ms) and encoded group.
type CellKey struct {
	Epoch  int64
	Window int64
	Group  string
}

// Delta accumulates a view's state per cell in memory. It is not safe for
// concurrent use.
type Delta struct {
	View  *View
	Cells map[CellKey]*DeltaCell

	starts []int64
	key    []byte
	elem   []byte
}

// DeltaCell is one cell of a Delta. The speed layer writes Num with
// increments and min/max, Elems with PFADD (Redis hashes them into the same
// HyperLogLog registers as logic's HLL), Buckets with increments and Picks
// with a compare of their keys.
type DeltaCell struct {
	Num     []float64             // View.Slots
	Elems   []map[string]struct{} // per distinct sketch: the elements seen (AppendDistinctElem)
	Buckets []QuantileSketch      // per quantile sketch: counts per bucket
	Picks   []Pick                // per pick (View.Picks)
}

// State returns the cell as a State (its elements hashed into sketches).
func (c *DeltaCell) State(v *View) State {
	st := v.NewState()
	copy(st.Num, c.Num)
	for i, set := range c.Elems {
		if len(set) == 0 {
			continue
		}
		h := new(HLL)
		for e := range set {
			h.Add([]byte(e))
		}
		st.HLL[i] = h
	}
	for i, q := range c.Buckets {
		if len(q) > 0 {
			st.Q[i] = q.Clone()
		}
	}
	copy(st.Picks, c.Picks)
	return st
}

// NewDelta returns an empty delta for the view.
func (v *View) NewDelta() *Delta {
	return &Delta{View: v, Cells: map[CellKey]*DeltaCell{}}
}

// Len is the number of cells in the delta.
func (d *Delta) Len() int { return len(d.Cells) }

// Reset empties the delta.
func (d *Delta) Reset() { clear(d.Cells) }

// Fold adds one event that arrived in the given epoch to every window that
// contains its event time. It knows no log position: the last and first
// measures break ties in event time by fold order only (an earlier fold
// stays), so callers whose views have them use FoldAt.
func (d *Delta) Fold(epoch int64, ev *Event) { d.FoldAt(epoch, LogPos{}, ev) }

// FoldAt is Fold of an event at a log position, which last and first
// measures use to break ties in event time (PickKey).
func (d *Delta) FoldAt(epoch int64, at LogPos, ev *Event) {
	v := d.View
	if v.where != nil && !v.where.Match(ev) {
		return
	}
	d.key = v.AppendGroupKey(d.key[:0], ev.Values)
	d.starts = v.Window.Starts(d.starts[:0], ev.Time)
	for _, w := range d.starts {
		c, ok := d.Cells[CellKey{epoch, w, string(d.key)}]
		if !ok {
			c = &DeltaCell{Num: make([]float64, v.NumSlots)}
			v.ResetNum(c.Num)
			if len(v.distinct) > 0 {
				c.Elems = make([]map[string]struct{}, len(v.distinct))
			}
			if len(v.quantile) > 0 {
				c.Buckets = make([]QuantileSketch, len(v.quantile))
			}
			if len(v.picks) > 0 {
				c.Picks = make([]Pick, len(v.picks))
			}
			d.Cells[CellKey{epoch, w, string(d.key)}] = c
		}
		for i := range v.Measures {
			v.Measures[i].fold(c.Num, ev)
		}
		for i, f := range v.distinct {
			x := ev.Values[f]
			if x.Null() {
				continue
			}
			d.elem = AppendDistinctElem(d.elem[:0], x)
			set := c.Elems[i]
			if set == nil {
				set = map[string]struct{}{}
				c.Elems[i] = set
			}
			if _, seen := set[string(d.elem)]; !seen {
				set[string(d.elem)] = struct{}{}
			}
		}
		for i, f := range v.quantile {
			x := ev.Values[f]
			if x.Null() {
				continue
			}
			q := c.Buckets[i]
			if q == nil {
				q = QuantileSketch{}
				c.Buckets[i] = q
			}
			q[QuantileBucket(x.Float())]++
		}
		for i, p := range v.picks {
			x := ev.Values[p.field]
			if x.Null() {
				continue
			}
			MergePick(&c.Picks[i], Pick{Key: PickKey{Time: ev.Time, LogPos: at}, Val: x}, p.last)
		}
	}
}

// AppendGroupKey appends the encoded group of an event's values (indexed
// like the stream's fields) to dst.
func (v *View) AppendGroupKey(dst []byte, values []Value) []byte {
	for i, fi := range v.dims {
		if i > 0 {
			dst = append(dst, groupSep)
		}
		dst = appendDim(dst, values[fi])
	}
	return dst
}

// GroupKey encodes dimension values given in the view's Dims order.
func (v *View) GroupKey(dims []Value) string {
	var b []byte
	for i, d := range dims {
		if i > 0 {
			b = append(b, groupSep)
		}
		b = appendDim(b, d)
	}
	return string(b)
}

// Group keys join dimensions with groupSep; inside string values groupSep
// and groupEsc are escaped with groupEsc, so no two groups share a key.
const (
	groupSep = 0x1f
	groupEsc = 0x1b
)

func appendDim(b []byte, x Value) []byte {
	switch x.Kind {
	case TypeString:
		b = append(b, 's')
		for i := 0; i < len(x.S); i++ {
			if c := x.S[i]; c == groupSep || c == groupEsc {
				b = append(b, groupEsc)
			}
			b = append(b, x.S[i])
		}
		return b
	case TypeInt:
		b = append(b, 'i')
		return strconv.AppendInt(b, x.I, 10)
	case TypeBool:
		b = append(b, 'b')
		return strconv.AppendInt(b, x.I, 10)
	}
	return append(b, 'n')
}

// DecodeGroup splits an encoded group into its dimension values, in the
// view's Dims order.
func (v *View) DecodeGroup(key string) ([]Value, error) {
	out := make([]Value, 0, len(v.dims))
	if len(v.dims) == 0 {
		if key != "" {
			return nil, fmt.Errorf("group %q for a view without dimensions", key)
		}
		return out, nil
	}
	for _, part := range splitGroup(key) {
		if part == "" {
			return nil, fmt.Errorf("bad group key %q", key)
		}
		switch part[0] {
		case 's':
			out = append(out, Value{Kind: TypeString, S: unescapeGroup(part[1:])})
		case 'i', 'b':
			n, err := strconv.ParseInt(part[1:], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad group key %q: %w", key, err)
			}
			k := TypeInt
			if part[0] == 'b' {
				k = TypeBool
			}
			out = append(out, Value{Kind: k, I: n})
		case 'n':
			out = append(out, Value{})
		default:
			return nil, fmt.Errorf("bad group key %q", key)
		}
	}
	if len(out) != len(v.dims) {
		return nil, fmt.Errorf("group key %q has %d dimensions, view %s has %d", key, len(out), v.Name, len(v.dims))
	}
	return out, nil
}

// DimValue converts a dimension value scanned from SQL (string, integers,
// bool or nil) into a Value of the i-th dimension's type.
func (v *View) DimValue(i int, x any) (Value, error) {
	t := v.Stream.Fields[v.dims[i]].Type
	switch y := x.(type) {
	case nil:
		return Value{}, nil
	case string:
		if t == TypeString {
			return Value{Kind: TypeString, S: y}, nil
		}
	case int64:
		return Value{Kind: t, I: y}, nil
	case int32:
		return Value{Kind: t, I: int64(y)}, nil
	case bool:
		if y {
			return Value{Kind: TypeBool, I: 1}, nil
		}
		return Value{Kind: TypeBool}, nil
	}
	return Value{}, fmt.Errorf("dimension %s: unexpected %T from SQL", v.Dims[i], x)
}

// SQL renders the batch computation of the view over source, a DuckDB
// relation holding the stream's lake rows (the declared fields plus _time,
// _arrival, _part, _seq and _idx). Only rows that arrived before cutoffMs
// count. Columns: window_start (BIGINT ms), d0..dN (dimensions), s0..sM
// (numeric slots, DOUBLE), then x0..xK (DOUBLE): the exact value of each
// sketch measure, in measure order (ExactMeasures), then p0..pJ: each pick
// (View.Picks) as a struct, NULL when empty (PickFromSQL reads it).
func (v *View) SQL(source string, cutoffMs int64) string {
	var b strings.Builder
	b.WriteString("SELECT window_start")
	v.dimCols(&b)
	for i, s := range v.slots {
		fmt.Fprintf(&b, ", CAST(%s AS DOUBLE) AS s%d", s.SQL, i)
	}
	for i, mi := range v.ExactMeasures() {
		fmt.Fprintf(&b, ", CAST(%s AS DOUBLE) AS x%d", v.Measures[mi].ExactSQL(), i)
	}
	for k := range v.picks {
		fmt.Fprintf(&b, ", %s AS p%d", v.pickSQL(k), k)
	}
	v.from(&b, source, cutoffMs, "")
	b.WriteString(" GROUP BY ALL")
	return b.String()
}

// ExactMeasures lists the measures (indices) whose exact value SQL adds.
func (v *View) ExactMeasures() []int {
	var out []int
	for i := range v.Measures {
		if v.Measures[i].ExactSQL() != "" {
			out = append(out, i)
		}
	}
	return out
}

// DistinctSQL renders the values of the i-th count_distinct sketch per cell:
// columns window_start, d0..dN and x (the field, non-null), each combination
// once. The batch layer hashes them (AppendDistinctElem) into the sketch
// that merges with the speed layer's.
func (v *View) DistinctSQL(source string, cutoffMs int64, i int) string {
	var b strings.Builder
	col := quoteIdent(v.Stream.Fields[v.distinct[i]].Name)
	b.WriteString("SELECT DISTINCT window_start")
	v.dimCols(&b)
	b.WriteString(", " + col + " AS x")
	v.from(&b, source, cutoffMs, col+" IS NOT NULL")
	return b.String()
}

// QuantileSQL renders the buckets of the i-th quantile sketch per cell:
// columns window_start, d0..dN, k (QuantileBucket, INTEGER) and n (BIGINT).
func (v *View) QuantileSQL(source string, cutoffMs int64, i int) string {
	var b strings.Builder
	col := quoteIdent(v.Stream.Fields[v.quantile[i]].Name)
	b.WriteString("SELECT window_start")
	v.dimCols(&b)
	b.WriteString(", " + QuantileBucketSQL("CAST("+col+" AS DOUBLE)") + " AS k, count(*) AS n")
	v.from(&b, source, cutoffMs, col+" IS NOT NULL")
	b.WriteString(" GROUP BY ALL")
	return b.String()
}

// QuantileRanksSQL renders, per cell, the two values around the rank of
// each quantile measure (in measure order): columns window_start, d0..dN,
// then lo0, hi0, lo1, hi1, ... (DOUBLE; NULL without values): the values of
// rank floor and ceil of q·(n-1), between which quantile_cont interpolates
// and which give the sketch's error bound (QuantileErrorBound). For audits:
// it sorts every cell's values.
func (v *View) QuantileRanksSQL(source string, cutoffMs int64) string {
	var b strings.Builder
	b.WriteString("SELECT window_start")
	v.dimCols(&b)
	for _, m := range v.Measures {
		if m.Kind != Quantile {
			continue
		}
		col := quoteIdent(m.Field)
		l := "list_sort(list(CAST(" + col + " AS DOUBLE)) FILTER (WHERE " + col + " IS NOT NULL))"
		r := strconv.FormatFloat(m.Q, 'g', -1, 64) + " * (count(" + col + ") - 1)"
		fmt.Fprintf(&b, ", %s[CAST(floor(%s) AS BIGINT) + 1], %s[CAST(ceil(%s) AS BIGINT) + 1]", l, r, l, r)
	}
	v.from(&b, source, cutoffMs, "")
	b.WriteString(" GROUP BY ALL")
	return b.String()
}

func (v *View) dimCols(b *strings.Builder) {
	for i, d := range v.Dims {
		fmt.Fprintf(b, ", %s AS d%d", quoteIdent(d), i)
	}
}

// from renders the FROM clause: the source's rows before the cutoff that
// pass the view's where (and cond, if any), with their window starts.
func (v *View) from(b *strings.Builder, source string, cutoffMs int64, cond string) {
	fmt.Fprintf(b, " FROM (SELECT *, %s AS window_start FROM %s WHERE _arrival < %d", v.Window.StartSQL("_time"), source, cutoffMs)
	if v.where != nil {
		b.WriteString(" AND (" + v.where.SQL() + ")")
	}
	if cond != "" {
		b.WriteString(" AND " + cond)
	}
	b.WriteString(") AS ev")
}

// splitGroup splits a group key at unescaped separators.
func splitGroup(key string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case groupEsc:
			i++
		case groupSep:
			parts = append(parts, key[start:i])
			start = i + 1
		}
	}
	return append(parts, key[start:])
}

func unescapeGroup(s string) string {
	if strings.IndexByte(s, groupEsc) < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == groupEsc && i+1 < len(s) {
			i++
		}
		b = append(b, s[i])
	}
	return string(b)
}
