package query

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
)

// Sources of a merged row.
const (
	SourceBatch = "batch"
	SourceSpeed = "speed"
	SourceBoth  = "batch+speed"
)

// MergedRow is one (window, group) cell of a view after the merge of the
// batch view and the speed layer.
type MergedRow struct {
	Window int64  // window start, unix ms
	Group  string // encoded group (logic.View.GroupKey)
	State  logic.State
	Source string // SourceBatch, SourceSpeed or SourceBoth
	Exact  bool   // every measure is exact (always for additive views; sketch measures only in one batch row)
	Final  bool   // the window ended at or before the watermark
}

// Merge answers a view from its batch rows (every record that arrived before
// cutoff, an epoch start; 0 = no batch) and its speed cells: per (window,
// group) the state is batch ⊕ Σ speed cells with epoch >= cutoff. Cells of
// earlier epochs are already in the batch and are skipped. watermark (unix
// ms, 0 = unknown) marks windows ending at or before it final. The inputs
// are not modified (batch rows are shared with a cache). Rows are sorted by
// window, then group.
func Merge(v *logic.View, cutoff int64, batch []batchviews.Row, speed []SpeedCell, watermark int64) ([]MergedRow, error) {
	type key struct {
		w int64
		g string
	}
	idx := make(map[key]int, len(batch)+len(speed))
	out := make([]MergedRow, 0, len(batch)+len(speed))
	// A row's state is shared with its input (a cached batch row, a speed
	// cell) until something merges into it; then it gets its own copy.
	owned := make([]bool, 0, cap(out))
	add := func(w int64, g string, st logic.State, src string) error {
		if err := v.CheckState(st); err != nil {
			return fmt.Errorf("%w: window %d: %w", ErrStateShape, w, err)
		}
		k := key{w, g}
		i, ok := idx[k]
		if !ok {
			idx[k] = len(out)
			out = append(out, MergedRow{Window: w, Group: g, State: st, Source: src})
			owned = append(owned, false)
			return nil
		}
		r := &out[i]
		if !owned[i] {
			r.State, owned[i] = r.State.Clone(), true
		}
		v.MergeState(&r.State, st)
		if r.Source != src {
			r.Source = SourceBoth
		}
		return nil
	}
	for _, r := range batch {
		if err := add(r.Window, r.Group, r.State, SourceBatch); err != nil {
			return nil, err
		}
	}
	for _, c := range speed {
		if cutoff > 0 && c.Epoch < cutoff {
			continue
		}
		if err := add(c.Window, c.Group, c.State, SourceSpeed); err != nil {
			return nil, err
		}
	}
	size := v.Window.Size.Milliseconds()
	exact := v.Exact()
	for i := range out {
		r := &out[i]
		r.Exact = exact || r.State.Exact != nil
		r.Final = watermark > 0 && r.Window+size <= watermark
	}
	slices.SortFunc(out, func(a, b MergedRow) int {
		if c := cmp.Compare(a.Window, b.Window); c != 0 {
			return c
		}
		return cmp.Compare(a.Group, b.Group)
	})
	return out, nil
}

// Filter keeps the groups whose dimension Dim (an index in View.Dims) has
// one of Values in its string form (logic.Value.String); "null" matches a
// null value.
type Filter struct {
	Dim    int
	Values []string
}

func (f Filter) match(x logic.Value) bool {
	for _, want := range f.Values {
		if x.Null() {
			if want == "null" {
				return true
			}
			continue
		}
		if x.String() == want {
			return true
		}
	}
	return false
}

// Rollup says how merged windows are rolled up into the answer's rows.
type Rollup struct {
	// Step is the bucket length in ms, buckets aligned to the UTC epoch.
	// 0 or the view's window step: one row per window (no rollup). For a
	// hopping view a larger step must be a multiple of the window size; a
	// bucket then merges only the windows aligned to the size, which
	// partition time, so no event is counted twice.
	Step int64
	// All rolls every window into one bucket starting at From (for a
	// hopping view: the non-overlapping windows from the first one >= From).
	All bool
	// From and To bound the window starts kept: [From, To) (To <= From: no bound).
	From, To int64
	// Dims lists the kept dimensions (indices in View.Dims) in output order;
	// nil keeps every dimension in the view's order. Dropped dimensions are
	// merged.
	Dims    []int
	Filters []Filter // all must match (applied before the rollup)
}

// ResultRow is one row of an answer.
type ResultRow struct {
	Window int64         // bucket start, unix ms
	Dims   []logic.Value // kept dimensions, in Rollup.Dims order
	State  logic.State
	Values []any // finalized measures (int64, float64 or nil), in view order
	Source string
	Exact  bool // every measure is exact (false when one overflowed)
	Final  bool
	// Overflow lists the measures (indices, in view order) whose value is
	// beyond what their type holds (logic.Measure.Overflowed): nil in
	// Values. nil when none.
	Overflow []int

	key string
}

// Apply filters, rolls up and finalizes merged rows (sorted by window, then
// group). Its result is sorted by bucket, then group. watermark is the one
// given to Merge.
func Apply(v *logic.View, rows []MergedRow, r Rollup, watermark int64) ([]ResultRow, error) {
	dims := r.Dims
	if dims == nil {
		dims = make([]int, len(v.Dims))
		for i := range dims {
			dims[i] = i
		}
	}
	size := v.Window.Size.Milliseconds()
	viewStep := v.Window.Step().Milliseconds()
	roll := r.All || (r.Step != 0 && r.Step != viewStep)
	hopping := viewStep != size
	anchor := int64(0) // hopping rollups keep windows with (start-anchor) % size == 0
	if r.All {
		anchor = ceilTo(r.From, viewStep)
	}
	if !roll && r.Dims == nil && len(r.Filters) == 0 {
		return applyRows(v, rows, r, watermark)
	}
	type key struct {
		b int64
		g string
	}
	idx := map[key]int{}
	var out []ResultRow
	kept := make([]logic.Value, 0, len(dims))
	for _, m := range rows {
		if r.To > r.From && (m.Window < r.From || m.Window >= r.To) {
			continue // outside the query's range (stores return only the range; be safe)
		}
		if roll && hopping && floorMod(m.Window-anchor, size) != 0 {
			continue
		}
		vals, err := v.DecodeGroup(m.Group)
		if err != nil {
			return nil, fmt.Errorf("view %s: %w", v.Name, err)
		}
		ok := true
		for _, f := range r.Filters {
			if !f.match(vals[f.Dim]) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		kept = kept[:0]
		for _, d := range dims {
			kept = append(kept, vals[d])
		}
		b, end := m.Window, m.Window+size
		switch {
		case r.All:
			b = r.From
			end = anchor + floorDiv(r.To-1-anchor, size)*size + size
		case roll:
			b = floorDiv(m.Window, r.Step) * r.Step
			end = b + r.Step
		}
		g := m.Group
		if r.Dims != nil {
			g = v.GroupKey(kept)
		}
		k := key{b, g}
		i, found := idx[k]
		if !found {
			idx[k] = len(out)
			out = append(out, ResultRow{Window: b, Dims: slices.Clone(kept), State: m.State.Clone(), Source: m.Source, Exact: m.Exact,
				Final: watermark > 0 && end <= watermark, key: g})
			continue
		}
		o := &out[i]
		v.MergeState(&o.State, m.State)
		if o.Source != m.Source {
			o.Source = SourceBoth
		}
		o.Exact = o.Exact && m.Exact
	}
	exact := v.Exact()
	for i := range out {
		out[i].Values, out[i].Overflow = v.FinalizeRow(&out[i].State)
		if !exact {
			out[i].Exact = out[i].State.Exact != nil
		}
		if out[i].Overflow != nil {
			out[i].Exact = false
		}
	}
	slices.SortFunc(out, func(a, b ResultRow) int {
		if c := cmp.Compare(a.Window, b.Window); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
	return out, nil
}

// applyRows is Apply without a rollup, dimension subset or filter: one
// result row per merged row, in the same order. States are shared with
// the merged rows (read-only from here on) and each group is decoded once.
func applyRows(v *logic.View, rows []MergedRow, r Rollup, watermark int64) ([]ResultRow, error) {
	size := v.Window.Size.Milliseconds()
	groups := map[string][]logic.Value{}
	out := make([]ResultRow, 0, len(rows))
	exact := v.Exact()
	for i := range rows {
		m := &rows[i]
		if r.To > r.From && (m.Window < r.From || m.Window >= r.To) {
			continue
		}
		dims, ok := groups[m.Group]
		if !ok {
			var err error
			if dims, err = v.DecodeGroup(m.Group); err != nil {
				return nil, fmt.Errorf("view %s: %w", v.Name, err)
			}
			groups[m.Group] = dims
		}
		row := ResultRow{Window: m.Window, Dims: dims, State: m.State, Source: m.Source, Exact: m.Exact,
			Final: watermark > 0 && m.Window+size <= watermark, key: m.Group}
		row.Values, row.Overflow = v.FinalizeRow(&row.State)
		if !exact {
			row.Exact = row.State.Exact != nil
		}
		if row.Overflow != nil {
			row.Exact = false
		}
		out = append(out, row)
	}
	return out, nil
}

// overflowWarnings describes the overflows among rows: per measure that
// overflowed, in how many rows (nil when none).
func overflowWarnings(v *logic.View, rows []ResultRow) []string {
	var counts []int
	for i := range rows {
		for _, j := range rows[i].Overflow {
			if counts == nil {
				counts = make([]int, len(v.Measures))
			}
			counts[j]++
		}
	}
	var out []string
	for j, n := range counts {
		if n == 0 {
			continue
		}
		rowsText := "1 row"
		if n > 1 {
			rowsText = fmt.Sprintf("%d rows", n)
		}
		m := &v.Measures[j]
		out = append(out, fmt.Sprintf("%s: overflow in %s: the value is beyond %s and is answered null, with exact false", m.Name, rowsText, m.OverflowRange()))
	}
	return out
}

// OrderLimit sorts rows by the measure with index measure (-1: keep the
// order), descending when desc, nulls last, ties in their current order;
// then keeps the first limit rows (0: all).
func OrderLimit(rows []ResultRow, measure int, desc bool, limit int) []ResultRow {
	if measure >= 0 {
		slices.SortStableFunc(rows, func(a, b ResultRow) int {
			x, xs, xok := orderKey(a.Values[measure])
			y, ys, yok := orderKey(b.Values[measure])
			switch {
			case !xok && !yok:
				return 0
			case !xok:
				return 1
			case !yok:
				return -1
			}
			c := cmp.Or(cmp.Compare(x, y), strings.Compare(xs, ys))
			if desc {
				return -c
			}
			return c
		})
	}
	if limit > 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	return rows
}

// orderKey is what OrderLimit compares of an answer (the answers of one
// measure have one type): a number, a time's unix ms or a bool (false
// before true) as f, a string (last and first of a string field) as s;
// ok is false for null.
func orderKey(x any) (f float64, s string, ok bool) {
	switch y := x.(type) {
	case int64:
		return float64(y), "", true
	case float64:
		if math.IsNaN(y) {
			return 0, "", false
		}
		return y, "", true
	case time.Time:
		return float64(y.UnixMilli()), "", true
	case bool:
		if y {
			return 1, "", true
		}
		return 0, "", true
	case string:
		return 0, y, true
	}
	return 0, "", false
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }

func ceilTo(a, step int64) int64 { return -floorDiv(-a, step) * step }
