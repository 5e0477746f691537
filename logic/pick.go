package logic

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The measures last(f) and first(f) pick one event's value of f: last the
// value of the event with the greatest event time, first of the one with
// the least. Ties in event time are broken by the event's place in the
// log, so that every event has its own key and both layers pick the same
// one: last takes the later arrival, first the earlier, where "later" is
// the order of PickKey — (event time, arrival, partition, sequence, index
// in the record), compared in that order. Arrival is the unix millisecond
// the log stored the record (the lake's _arrival), so the order does not
// depend on how a stream is partitioned; partition, sequence and index
// only break the ties of one millisecond.
//
// Events whose f is null (absent) are passed over, as SQL aggregates pass
// over nulls (DuckDB's arg_max does): last(f) is the value of the latest
// event that has one, and null only when no event of the cell has a value.
//
// The state of such a measure is a Pick: the key and value of the event
// picked so far. Picks merge as a commutative monoid (the empty pick is the
// identity, the merge keeps the pick whose key wins), so deltas merge in
// any order and grouping, like every other slot.

// LogPos is where an event sits in the log: the arrival (unix ms) of its
// record, the stream partition, the record's sequence in the partition and
// the event's index in the record. The speed layer has it from the
// record; the lake keeps it as _arrival, _part, _seq and _idx.
type LogPos struct {
	Arrival int64
	Part    int
	Seq     uint64
	Index   int
}

// PickKey orders events for last and first: event time, then the log
// position (arrival, partition, sequence, index).
type PickKey struct {
	Time int64 // event time, unix ms
	LogPos
}

// Compare orders two keys: -1 when k comes before o, 0 when equal, +1 after.
func (k PickKey) Compare(o PickKey) int {
	if c := cmp.Compare(k.Time, o.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Arrival, o.Arrival); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Part, o.Part); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Seq, o.Seq); c != 0 {
		return c
	}
	return cmp.Compare(k.Index, o.Index)
}

// Pick is the state of a last or first measure: the key and the value of
// the event picked. The zero Pick (null value) is empty: no event with a
// value yet.
type Pick struct {
	Key PickKey
	Val Value
}

// Empty reports whether no event was picked.
func (p Pick) Empty() bool { return p.Val.Null() }

// MergePick merges src into dst: the pick whose key comes last (last
// true) or first (last false) stays; an empty pick changes nothing. Of
// two equal keys (one event) dst stays.
func MergePick(dst *Pick, src Pick, last bool) {
	if src.Empty() {
		return
	}
	if dst.Empty() {
		*dst = src
		return
	}
	c := src.Key.Compare(dst.Key)
	if last && c > 0 || !last && c < 0 {
		*dst = src
	}
}

// PickKeySize is the length of an encoded key (AppendPick): the first
// bytes of an encoded pick, ordered as the keys are when compared byte by
// byte as unsigned bytes (the speed store's commit script compares them
// so).
const PickKeySize = 32

// AppendPick appends a pick's encoding to dst (nothing for an empty pick):
// the key in PickKeySize bytes, big endian, each integer with its sign bit
// flipped (time 8, arrival 8, partition 4, sequence 8, index 4 bytes) so
// that byte order is key order; then the value: one byte of kind and its
// payload — a string's bytes, or 8 bytes little endian of an int, bool or
// time (unix ms), or of a float's IEEE-754 bits.
func AppendPick(dst []byte, p Pick) []byte {
	if p.Empty() {
		return dst
	}
	k := p.Key
	dst = binary.BigEndian.AppendUint64(dst, uint64(k.Time)^1<<63)
	dst = binary.BigEndian.AppendUint64(dst, uint64(k.Arrival)^1<<63)
	dst = binary.BigEndian.AppendUint32(dst, uint32(int32(k.Part))^1<<31)
	dst = binary.BigEndian.AppendUint64(dst, k.Seq)
	dst = binary.BigEndian.AppendUint32(dst, uint32(int32(k.Index))^1<<31)
	dst = append(dst, byte(p.Val.Kind))
	switch p.Val.Kind {
	case TypeString:
		return append(dst, p.Val.S...)
	case TypeFloat:
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.Val.F))
	}
	return binary.LittleEndian.AppendUint64(dst, uint64(p.Val.I))
}

var errBadPick = errors.New("bad pick encoding")

// DecodePick reads AppendPick's encoding; an empty b is the empty pick.
func DecodePick(b []byte) (Pick, error) {
	if len(b) == 0 {
		return Pick{}, nil
	}
	if len(b) < PickKeySize+1 {
		return Pick{}, errBadPick
	}
	var p Pick
	p.Key.Time = int64(binary.BigEndian.Uint64(b) ^ 1<<63)
	p.Key.Arrival = int64(binary.BigEndian.Uint64(b[8:]) ^ 1<<63)
	p.Key.Part = int(int32(binary.BigEndian.Uint32(b[16:]) ^ 1<<31))
	p.Key.Seq = binary.BigEndian.Uint64(b[20:])
	p.Key.Index = int(int32(binary.BigEndian.Uint32(b[28:]) ^ 1<<31))
	kind, rest := FieldType(b[PickKeySize]), b[PickKeySize+1:]
	p.Val.Kind = kind
	switch kind {
	case TypeString:
		p.Val.S = string(rest)
		return p, nil
	case TypeInt, TypeBool, TypeTime, TypeFloat:
		if len(rest) != 8 {
			return Pick{}, errBadPick
		}
		x := binary.LittleEndian.Uint64(rest)
		if kind == TypeFloat {
			p.Val.F = math.Float64frombits(x)
		} else {
			p.Val.I = int64(x)
		}
		return p, nil
	}
	return Pick{}, fmt.Errorf("%w: value kind %d", errBadPick, kind)
}

// pickSpec is one pick of a view's state: the stream field it picks and
// whether the latest event wins (last) or the earliest (first).
type pickSpec struct {
	field int
	last  bool
}

// Picks is the number of picks in the view's states (State.Picks): one
// per last or first measure, measures of one kind over one field sharing.
func (v *View) Picks() int { return len(v.picks) }

// PickLast reports whether pick k of the view's states keeps the latest
// event (a last measure) or the earliest (first).
func (v *View) PickLast(k int) bool { return v.picks[k].last }

// PickType is the type of the field pick k of the view's states picks.
func (v *View) PickType(k int) FieldType { return v.Stream.Fields[v.picks[k].field].Type }

// pickFor returns the index of the pick of (field, last) in list, adding
// it if new.
func pickFor(list []pickSpec, field int, last bool) (int, []pickSpec) {
	for i, p := range list {
		if p.field == field && p.last == last {
			return i, list
		}
	}
	return len(list), append(list, pickSpec{field, last})
}

// pickValue is a picked value as a query answers it: string, int64,
// float64, bool, or a time.Time in UTC for a time field; nil when empty.
func pickValue(x Value) any {
	if x.Kind == TypeTime {
		return time.UnixMilli(x.I).UTC()
	}
	return x.Any()
}

// pickSQL is the DuckDB aggregate computing pick k over raw rows: the
// greatest (last) or least (first) struct of the key's columns and the
// field's value over the rows where the field is not null — a struct
// compares field by field, so this is the row of the greatest (least) key,
// which no two rows share. It is NULL when every row's field is null.
// Columns of the struct: t, a, p, s, i (BIGINT: _time, _arrival, _part,
// _seq, _idx) and v (the field, as the source types it).
func (v *View) pickSQL(k int) string {
	agg := "min"
	if v.picks[k].last {
		agg = "max"
	}
	col := quoteIdent(v.Stream.Fields[v.picks[k].field].Name)
	return agg + "(struct_pack(t := CAST(_time AS BIGINT), a := CAST(_arrival AS BIGINT), p := CAST(_part AS BIGINT), " +
		"s := CAST(_seq AS BIGINT), i := CAST(_idx AS BIGINT), v := " + col + ")) FILTER (WHERE " + col + " IS NOT NULL)"
}

// PickFromSQL converts what the pick k column of SQL scans as (nil, or a
// struct as map[string]any) into the pick: its key from t, a, p, s, i and
// its value of the field's type.
func (v *View) PickFromSQL(k int, x any) (Pick, error) {
	if x == nil {
		return Pick{}, nil
	}
	f := v.Stream.Fields[v.picks[k].field]
	row, ok := x.(map[string]any)
	if !ok {
		return Pick{}, fmt.Errorf("pick of %s: unexpected %T from SQL", f.Name, x)
	}
	var key [5]int64
	for i, n := range [5]string{"t", "a", "p", "s", "i"} {
		c, ok := row[n].(int64)
		if !ok {
			return Pick{}, fmt.Errorf("pick of %s: key %s: unexpected %T from SQL", f.Name, n, row[n])
		}
		key[i] = c
	}
	val, err := SQLValue(f.Type, row["v"])
	if err != nil {
		return Pick{}, fmt.Errorf("pick of %s: %w", f.Name, err)
	}
	if val.Null() {
		return Pick{}, fmt.Errorf("pick of %s: a key without a value from SQL", f.Name)
	}
	return Pick{Key: PickKey{Time: key[0], LogPos: LogPos{Arrival: key[1], Part: int(key[2]), Seq: uint64(key[3]), Index: int(key[4])}}, Val: val}, nil
}

// SQLValue converts a value of a field of type t scanned from DuckDB
// (nil, string, integers, float64, bool, time.Time) into a Value of that
// type.
func SQLValue(t FieldType, x any) (Value, error) {
	switch y := x.(type) {
	case nil:
		return Value{}, nil
	case string:
		if t == TypeString {
			return Value{Kind: TypeString, S: y}, nil
		}
	case int64:
		if t == TypeInt || t == TypeTime {
			return Value{Kind: t, I: y}, nil
		}
	case int32:
		if t == TypeInt {
			return Value{Kind: t, I: int64(y)}, nil
		}
	case float64:
		if t == TypeFloat {
			return Value{Kind: TypeFloat, F: y}, nil
		}
	case bool:
		if t == TypeBool {
			if y {
				return Value{Kind: TypeBool, I: 1}, nil
			}
			return Value{Kind: TypeBool}, nil
		}
	case time.Time:
		if t == TypeTime {
			return Value{Kind: TypeTime, I: y.UnixMilli()}, nil
		}
	}
	return Value{}, fmt.Errorf("unexpected %T from SQL for a %s field", x, t)
}
