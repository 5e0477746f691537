package logic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// State is the aggregate of one cell (a window and group, in one arrival
// epoch or one batch version): the numeric slots of every measure, the
// sketches of the count_distinct and quantile measures, the picks of the
// last and first measures and, only in a batch row computed over raw
// rows, the exact values of the sketch measures.
//
// Sketches in a State are shared, never changed in place: MergeState copies
// a sketch before it first changes it (copy on write), so a State built
// from a cached batch row leaves the cache intact.
type State struct {
	Num []float64        // View.Slots, NaN = empty min/max
	HLL []*HLL           // per View.Distinct sketch; nil = no value yet
	Q   []QuantileSketch // per View.Quantile sketch; nil = no value yet
	// Picks holds each pick (View.Picks) of the last and first measures;
	// values, never shared.
	Picks []Pick
	// Exact holds, per measure (at Measure.ExactIdx), the exact value of each sketch
	// measure (NaN = null) when the state is one batch row; nil once
	// anything merged into it.
	Exact []float64

	owned uint64 // bit i: HLL[i] (low 32 bits) or Q[i] (high 32) is this State's own copy
}

// maxSketches bounds the sketches of one kind per view (the copy-on-write bits).
const maxSketches = 32

// NewState returns an empty state: every slot at its identity, no sketches.
func (v *View) NewState() State {
	st := State{Num: make([]float64, v.NumSlots)}
	v.ResetNum(st.Num)
	if len(v.distinct) > 0 {
		st.HLL = make([]*HLL, len(v.distinct))
	}
	if len(v.quantile) > 0 {
		st.Q = make([]QuantileSketch, len(v.quantile))
	}
	if len(v.picks) > 0 {
		st.Picks = make([]Pick, len(v.picks))
	}
	return st
}

// ResetNum sets every numeric slot to its identity.
func (v *View) ResetNum(num []float64) {
	for i, s := range v.slots {
		num[i] = s.Identity()
	}
}

// Clone returns a state that can be merged into without touching st. It
// keeps st's exact values.
func (st State) Clone() State {
	return State{Num: slices.Clone(st.Num), HLL: slices.Clone(st.HLL), Q: slices.Clone(st.Q), Picks: slices.Clone(st.Picks), Exact: slices.Clone(st.Exact)}
}

// MergeState merges src into dst: slots by their operation, sketches by
// union, picks by their keys (MergePick). dst loses its exact values (the merge of two cells is only as
// exact as its sketches). src is not modified.
func (v *View) MergeState(dst *State, src State) {
	for i, s := range v.slots {
		if s.Op != OpAdd && math.IsNaN(src.Num[i]) {
			continue
		}
		dst.Num[i] = s.Merge(dst.Num[i], src.Num[i])
	}
	for i, h := range src.HLL {
		switch {
		case h == nil:
		case dst.HLL[i] == nil:
			dst.HLL[i] = h
			dst.owned &^= 1 << i
		default:
			if dst.owned&(1<<i) == 0 {
				dst.HLL[i] = dst.HLL[i].Clone()
				dst.owned |= 1 << i
			}
			dst.HLL[i].Merge(h)
		}
	}
	for i, q := range src.Q {
		bit := uint64(1) << (maxSketches + i)
		switch {
		case q == nil:
		case dst.Q[i] == nil:
			dst.Q[i] = q
			dst.owned &^= bit
		default:
			if dst.owned&bit == 0 {
				dst.Q[i] = dst.Q[i].Clone()
				dst.owned |= bit
			}
			dst.Q[i].Merge(q)
		}
	}
	for i, p := range src.Picks {
		MergePick(&dst.Picks[i], p, v.picks[i].last)
	}
	dst.Exact = nil
}

// Finalize renders a state as the measures' answers, in measure order.
func (v *View) Finalize(st *State) []any {
	out, _ := v.FinalizeRow(st)
	return out
}

// FinalizeRow is Finalize that also lists the measures (indices, in
// order) whose value overflowed (Measure.Overflowed): nil in the answers.
// The list is nil when none did.
func (v *View) FinalizeRow(st *State) ([]any, []int) {
	out := make([]any, len(v.Measures))
	var over []int
	for i := range v.Measures {
		x, o := v.Measures[i].finalize(st)
		out[i] = x
		if o {
			over = append(over, i)
		}
	}
	return out, over
}

// CheckState reports whether st has the shape of the view's states.
func (v *View) CheckState(st State) error {
	if len(st.Num) != v.NumSlots || len(st.HLL) != len(v.distinct) || len(st.Q) != len(v.quantile) ||
		len(st.Picks) != len(v.picks) || (st.Exact != nil && len(st.Exact) != len(v.Measures)) {
		return fmt.Errorf("state has %d slots, %d distinct and %d quantile sketches, %d picks, %d exact values; view %s has %d, %d, %d, %d, %d",
			len(st.Num), len(st.HLL), len(st.Q), len(st.Picks), len(st.Exact), v.Name, v.NumSlots, len(v.distinct), len(v.quantile), len(v.picks), len(v.Measures))
	}
	return v.checkPicks(st.Picks)
}

// checkPicks reports a pick whose value is not of its field's type.
func (v *View) checkPicks(picks []Pick) error {
	for i, p := range picks {
		if t := v.Stream.Fields[v.picks[i].field].Type; !p.Empty() && p.Val.Kind != t {
			return fmt.Errorf("pick %d holds a %s; view %s picks a %s there", i, p.Val.Kind, v.Name, t)
		}
	}
	return nil
}

// AppendDistinctElem appends the element a count_distinct sketch hashes for
// a value: strings as they are, integers, times (unix ms) and bools in
// decimal, floats in Go's shortest form (-0 as 0). The speed layer PFADDs
// it, the batch layer hashes the same bytes, so their sketches agree.
func AppendDistinctElem(dst []byte, x Value) []byte {
	switch x.Kind {
	case TypeString:
		return append(dst, x.S...)
	case TypeFloat:
		f := x.F
		if f == 0 {
			f = 0
		}
		return strconv.AppendFloat(dst, f, 'g', -1, 64)
	}
	return strconv.AppendInt(dst, x.I, 10)
}

// EncodeSketches serializes a state's sketches (distinct ones first, as
// Redis HyperLogLog values; then quantile ones) and then its picks
// (AppendPick); an empty sketch or pick is an empty byte string.
func (st State) EncodeSketches() [][]byte {
	if len(st.HLL)+len(st.Q)+len(st.Picks) == 0 {
		return nil
	}
	out := make([][]byte, 0, len(st.HLL)+len(st.Q)+len(st.Picks))
	for _, h := range st.HLL {
		if h == nil {
			out = append(out, nil)
			continue
		}
		out = append(out, h.MarshalRedis())
	}
	for _, q := range st.Q {
		out = append(out, q.MarshalBinary())
	}
	for _, p := range st.Picks {
		out = append(out, AppendPick(nil, p))
	}
	return out
}

// DecodeSketches is the inverse of EncodeSketches, into st (which has the
// view's shape). A nil b (rows of a view without sketches) leaves st empty.
func (v *View) DecodeSketches(st *State, b [][]byte) error {
	if len(b) == 0 {
		return nil
	}
	if len(b) != len(v.distinct)+len(v.quantile)+len(v.picks) {
		return fmt.Errorf("%d sketches and picks, view %s has %d", len(b), v.Name, len(v.distinct)+len(v.quantile)+len(v.picks))
	}
	for i := range v.distinct {
		if len(b[i]) == 0 {
			continue
		}
		h, err := DecodeRedisHLL(b[i])
		if err != nil {
			return err
		}
		st.HLL[i] = h
	}
	for i := range v.quantile {
		x := b[len(v.distinct)+i]
		if len(x) == 0 {
			continue
		}
		q, err := UnmarshalQuantileSketch(x)
		if err != nil {
			return err
		}
		st.Q[i] = q
	}
	for i := range v.picks {
		p, err := DecodePick(b[len(v.distinct)+len(v.quantile)+i])
		if err != nil {
			return err
		}
		st.Picks[i] = p
	}
	return v.checkPicks(st.Picks)
}

// MarshalBinary encodes the sketch as (zigzag key delta, count) varint
// pairs in key order; empty for an empty sketch.
func (s QuantileSketch) MarshalBinary() []byte {
	keys := make([]int32, 0, len(s))
	for k, n := range s {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b []byte
	prev := int64(0)
	for _, k := range keys {
		b = binary.AppendVarint(b, int64(k)-prev)
		b = binary.AppendUvarint(b, uint64(s[k]))
		prev = int64(k)
	}
	return b
}

var errBadQuantileSketch = errors.New("bad quantile sketch encoding")

// UnmarshalQuantileSketch reads MarshalBinary's encoding.
func UnmarshalQuantileSketch(b []byte) (QuantileSketch, error) {
	s := QuantileSketch{}
	prev := int64(0)
	for len(b) > 0 {
		d, n := binary.Varint(b)
		if n <= 0 {
			return nil, errBadQuantileSketch
		}
		b = b[n:]
		c, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errBadQuantileSketch
		}
		b = b[n:]
		prev += d
		if prev < math.MinInt32 || prev > math.MaxInt32 {
			return nil, errBadQuantileSketch
		}
		s[int32(prev)] += float64(c)
	}
	return s, nil
}

// Clone returns an independent copy.
func (s QuantileSketch) Clone() QuantileSketch {
	c := make(QuantileSketch, len(s))
	for k, n := range s {
		c[k] = n
	}
	return c
}
