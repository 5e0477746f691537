package logic

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/braid-data/braid/logic/defaults"
)

// An entity's state is the key's events themselves, compact: for each
// event its event time, its arrival, its place in the log (partition,
// sequence, index in the record) and the values of the fields the
// features read (EntityEvent). Every feature is computed from them at read
// time (Entity.Compute), with the same code whether the events came from
// Redis (batch days and speed epochs) or from the lake, so every feature
// is exact — count_distinct and quantile too — and an as_of in the past
// leaves out the events that arrived after it (point-in-time correct).

// DayMs is the length of a day in unix milliseconds: the batch layer keeps
// an entity key's events per UTC day of their event time.
const DayMs = 24 * 60 * 60 * 1000

// DayOf returns the start (unix ms) of the UTC day holding t.
func DayOf(t int64) int64 { return floorDiv(t, DayMs) * DayMs }

// EntityEvent is one event of an entity key, as entity state keeps it.
type EntityEvent struct {
	Time    int64 // event time, unix ms
	Arrival int64 // when the log stored it, unix ms
	Part    int   // the stream partition of its log record
	Seq     uint64
	Idx     int     // its index in the log record
	Values  []Value // the values of Entity.Fields, in order
}

// Key is the event's place in the order of last and first (PickKey: event
// time, then arrival, then place in the log), the one views use too.
func (a *EntityEvent) Key() PickKey {
	return PickKey{Time: a.Time, LogPos: LogPos{Arrival: a.Arrival, Part: a.Part, Seq: a.Seq, Index: a.Idx}}
}

// Compare orders events as PickKey does: last(f) is the value of the
// greatest, first(f) of the least.
func (a *EntityEvent) Compare(b *EntityEvent) int { return a.Key().Compare(b.Key()) }

// entityFormat is part of an entity's definition: bump it when the
// encoding of EntityEvent or the meaning of the stored state changes.
const entityFormat = "braid entity definition 1"

// init computes what the entity reads and its definition.
func (e *Entity) init() {
	s := e.Stream
	seen := map[int]bool{}
	for i := range e.Features {
		if f := e.Features[i].Measure.field; f >= 0 && !seen[f] {
			seen[f] = true
			e.fields = append(e.fields, f)
		}
	}
	slices.Sort(e.fields)
	for i := range e.Features {
		e.Features[i].pos = slices.Index(e.fields, e.Features[i].Measure.field)
	}
	var b strings.Builder
	field := func(role string, i int) {
		f := s.Fields[i]
		fmt.Fprintf(&b, "%s %q %s pii=%d\n", role, f.Name, f.Type, f.PII)
	}
	b.WriteString(entityFormat + "\n")
	fmt.Fprintf(&b, "stream %q partitions %d\n", s.Name, s.Partitions)
	if s.PartitionField >= 0 {
		field("partition_by", s.PartitionField)
	}
	field("time", s.TimeField)
	field("key", e.key)
	for _, f := range e.fields {
		field("field", f)
	}
	fmt.Fprintf(&b, "keep %d\n", e.Keep().Milliseconds())
	sum := sha256.Sum256([]byte(b.String()))
	e.def = hex.EncodeToString(sum[:8])
}

// Definition is the entity's definition fingerprint, 16 hex digits: the
// stream and its partitioning, the key, the type and PII mode of every
// field the features read, and how much history is kept (Keep). The
// features' measures are not part of it: the stored events serve any
// measure over the same fields, so a feature added or changed over
// fields already read needs no rebuild.
func (e *Entity) Definition() string { return e.def }

// StateKey names the entity's state in the stores: "{name}@{definition}".
func (e *Entity) StateKey() string { return e.Name + "@" + e.def }

// Fields returns the names of the stream fields the features read, in the
// order of EntityEvent.Values.
func (e *Entity) Fields() []string {
	out := make([]string, len(e.fields))
	for i, f := range e.fields {
		out[i] = e.Stream.Fields[f].Name
	}
	return out
}

// FieldTypes returns the types of Fields, in order.
func (e *Entity) FieldTypes() []FieldType {
	out := make([]FieldType, len(e.fields))
	for i, f := range e.fields {
		out[i] = e.Stream.Fields[f].Type
	}
	return out
}

// KeyType is the type of the key field (string or int).
func (e *Entity) KeyType() FieldType { return e.Stream.Fields[e.key].Type }

// Unbounded reports whether a feature has no over: it covers all history
// the stream keeps (streams.S.retention; forever without one).
func (e *Entity) Unbounded() bool {
	for i := range e.Features {
		if e.Features[i].Over <= 0 {
			return true
		}
	}
	return false
}

// MaxOver is the longest over of the features (0 when one is unbounded).
func (e *Entity) MaxOver() time.Duration {
	var m time.Duration
	for i := range e.Features {
		if e.Features[i].Over <= 0 {
			return 0
		}
		m = max(m, e.Features[i].Over)
	}
	return m
}

// Keep is how much event time the online store keeps per key, back from
// now: the longest over plus defaults.EntityAsOfReach (so an as_of up to
// that far back is answered from it); 0 when a feature is unbounded
// (everything the stream keeps).
func (e *Entity) Keep() time.Duration {
	if e.Unbounded() {
		return 0
	}
	return e.MaxOver() + defaults.EntityAsOfReach
}

// Expiry is how long a key may go without events before its state may
// leave the online store: Keep plus a margin; 0 (never) when unbounded.
func (e *Entity) Expiry() time.Duration {
	if k := e.Keep(); k > 0 {
		return k + defaults.EntityExpiryMargin
	}
	return 0
}

// KeyValue reads a key as written in a request into the key field's type.
func (e *Entity) KeyValue(key string) (Value, error) {
	if e.KeyType() == TypeInt {
		n, err := strconv.ParseInt(key, 10, 64)
		if err != nil {
			return Value{}, fmt.Errorf("key %q: entity %s has integer keys", key, e.Name)
		}
		return Value{Kind: TypeInt, I: n}, nil
	}
	return Value{Kind: TypeString, S: key}, nil
}

// KeyPartitioned reports whether every event of a key is in one partition
// of the stream (the stream is partitioned by the entity's key, or has
// one partition): a key's state then lives in that partition alone.
func (e *Entity) KeyPartitioned() bool {
	return e.Stream.Partitions <= 1 || e.Stream.PartitionField == e.key
}

// HomePartition is the partition whose slot holds a key's batch state:
// the partition of its events when the stream is partitioned by the key,
// else the one the key would pick as a partition key.
func (e *Entity) HomePartition(key Value) int { return e.Stream.PartitionOfValue(key) }

// EventOf is what the entity keeps of an event.
func (e *Entity) EventOf(ev *Event, arrival int64, part int, seq uint64, idx int) EntityEvent {
	out := EntityEvent{Time: ev.Time, Arrival: arrival, Part: part, Seq: seq, Idx: idx, Values: make([]Value, len(e.fields))}
	for i, f := range e.fields {
		out.Values[i] = ev.Values[f]
	}
	return out
}

// AppendEvent appends an event's encoding: time (varint), arrival − time
// (varint), partition, sequence and index (uvarints), then per field a
// kind byte and its value (strings length-prefixed, ints, bools and
// times as varints, floats as 8 bytes of IEEE-754 bits). Encodings
// concatenate: a run of them is a list.
func (e *Entity) AppendEvent(dst []byte, ev *EntityEvent) []byte {
	dst = binary.AppendVarint(dst, ev.Time)
	dst = binary.AppendVarint(dst, ev.Arrival-ev.Time)
	dst = binary.AppendUvarint(dst, uint64(ev.Part))
	dst = binary.AppendUvarint(dst, ev.Seq)
	dst = binary.AppendUvarint(dst, uint64(ev.Idx))
	for _, v := range ev.Values {
		dst = append(dst, byte(v.Kind))
		switch v.Kind {
		case TypeNull:
		case TypeString:
			dst = binary.AppendUvarint(dst, uint64(len(v.S)))
			dst = append(dst, v.S...)
		case TypeFloat:
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v.F))
		default:
			dst = binary.AppendVarint(dst, v.I)
		}
	}
	return dst
}

var errBadEntityEvent = errors.New("bad entity event encoding")

// DecodeEvents appends the events of a run of AppendEvent encodings to dst.
func (e *Entity) DecodeEvents(dst []EntityEvent, b []byte) ([]EntityEvent, error) {
	dst, _, err := decodeEvents(e, dst, nil, b)
	return dst, err
}

// DecodeEventsString is DecodeEvents of an encoding held in a string (a
// Redis reply), for a reader of many keys: string values share the
// string's memory instead of being copied, and the events' values are
// appended to vals, which it returns — a caller that is done with the
// events passes vals[:0] again and decodes without allocating.
func (e *Entity) DecodeEventsString(dst []EntityEvent, vals []Value, s string) ([]EntityEvent, []Value, error) {
	return decodeEvents(e, dst, vals, s)
}

func decodeEvents[T ~string | ~[]byte](e *Entity, dst []EntityEvent, vals []Value, b T) ([]EntityEvent, []Value, error) {
	nf := len(e.fields)
	for len(b) > 0 {
		var ev EntityEvent
		var ok bool
		var x int64
		var u uint64
		if ev.Time, b, ok = varint(b); !ok {
			return dst, vals, errBadEntityEvent
		}
		if x, b, ok = varint(b); !ok {
			return dst, vals, errBadEntityEvent
		}
		ev.Arrival = ev.Time + x
		if u, b, ok = uvarint(b); !ok {
			return dst, vals, errBadEntityEvent
		}
		ev.Part = int(u)
		if ev.Seq, b, ok = uvarint(b); !ok {
			return dst, vals, errBadEntityEvent
		}
		if u, b, ok = uvarint(b); !ok {
			return dst, vals, errBadEntityEvent
		}
		ev.Idx = int(u)
		// Values of earlier events stay valid when vals grows: they keep
		// the array they were decoded into.
		vals = slices.Grow(vals, nf)
		ev.Values = vals[len(vals) : len(vals)+nf : len(vals)+nf]
		vals = vals[:len(vals)+nf]
		for i := range nf {
			if len(b) == 0 {
				return dst, vals, errBadEntityEvent
			}
			k := FieldType(b[0])
			b = b[1:]
			v := Value{Kind: k}
			switch k {
			case TypeNull:
			case TypeString:
				if u, b, ok = uvarint(b); !ok || uint64(len(b)) < u {
					return dst, vals, errBadEntityEvent
				}
				v.S, b = string(b[:u]), b[u:]
			case TypeFloat:
				if len(b) < 8 {
					return dst, vals, errBadEntityEvent
				}
				var bits uint64
				for j := range 8 {
					bits |= uint64(b[j]) << (8 * j)
				}
				v.F, b = math.Float64frombits(bits), b[8:]
			case TypeInt, TypeBool, TypeTime:
				if v.I, b, ok = varint(b); !ok {
					return dst, vals, errBadEntityEvent
				}
			default:
				return dst, vals, errBadEntityEvent
			}
			ev.Values[i] = v
		}
		dst = append(dst, ev)
	}
	return dst, vals, nil
}

// varint reads a zig-zag varint (binary.AppendVarint) from b.
func varint[T ~string | ~[]byte](b T) (int64, T, bool) {
	u, rest, ok := uvarint(b)
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x, rest, ok
}

// uvarint reads a varint (binary.AppendUvarint) from b.
func uvarint[T ~string | ~[]byte](b T) (uint64, T, bool) {
	var x uint64
	var shift uint
	for i := 0; i < len(b) && i < binary.MaxVarintLen64; i++ {
		c := b[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, b, false // overflows 64 bits
			}
			return x | uint64(c)<<shift, b[i+1:], true
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, b, false
}

// EntityCellKey addresses one cell of an entity delta: a key and the
// arrival epoch (unix ms) of its events.
type EntityCellKey struct {
	Key   string
	Epoch int64
}

// EntityDelta accumulates, per key and arrival epoch, the encoded events
// the speed layer folded. It is not safe for concurrent use.
type EntityDelta struct {
	Entity *Entity
	Cells  map[EntityCellKey][]byte
	// Join is the arrival epoch (unix ms) from which the writer's folds
	// of the entity are complete: the first epoch after the position it
	// started from. The speed store records it when the entity first
	// joins a partition's commits; the batch layer covers what is before.
	Join int64
}

// NewDelta returns an empty delta for the entity.
func (e *Entity) NewDelta() *EntityDelta {
	return &EntityDelta{Entity: e, Cells: map[EntityCellKey][]byte{}}
}

// Len is the number of cells.
func (d *EntityDelta) Len() int { return len(d.Cells) }

// Reset empties the delta.
func (d *EntityDelta) Reset() { clear(d.Cells) }

// Fold adds an event that arrived at arrival (in the given epoch), held at
// index idx of record seq of partition part. An event without a key
// counts nowhere.
func (d *EntityDelta) Fold(epoch, arrival int64, part int, seq uint64, idx int, ev *Event) {
	e := d.Entity
	key, ok := e.KeyOf(ev)
	if !ok {
		return
	}
	ee := e.EventOf(ev, arrival, part, seq, idx)
	k := EntityCellKey{Key: key, Epoch: epoch}
	d.Cells[k] = e.AppendEvent(d.Cells[k], &ee)
}

// FeatureWindow is the range of event times a feature at asOf covers,
// [lo, hi): lo is math.MinInt64 for a feature without over.
func (f *Feature) FeatureWindow(asOf int64) (lo, hi int64) {
	if f.Over <= 0 {
		return math.MinInt64, asOf
	}
	return asOf - f.Over.Milliseconds(), asOf
}

// Span is the range of event times any feature at asOf covers.
func (e *Entity) Span(asOf int64) (lo, hi int64) {
	lo = asOf
	for i := range e.Features {
		l, _ := e.Features[i].FeatureWindow(asOf)
		lo = min(lo, l)
	}
	return lo, asOf
}

// Compute answers every feature (in Features order) over a key's events
// as of asOf: each feature over the events with event time in its window
// [asOf − over, asOf); with arrivedBy set (an as_of given), only the
// events that arrived at or before asOf count, so the answer is what was
// known at asOf. events may come in any order and may hold events outside
// every window; a null Value is the feature's null (no values).
//
// Measures: count() counts events, count(f) and the others read the
// non-null values of f only; sum and avg as in views; min and max typed
// like f; count_distinct exact; quantile(f, q) exact quantile_cont;
// last(f) and first(f) the value of f of the greatest and least event
// (EntityEvent.Compare) among those where f is not null.
func (e *Entity) Compute(events []EntityEvent, asOf int64, arrivedBy bool) []Value {
	out := make([]Value, len(e.Features))
	var vals []float64
	for fi := range e.Features {
		f := &e.Features[fi]
		m := &f.Measure
		lo, hi := f.FeatureWindow(asOf)
		var n int
		var sum, mn, mx float64
		var best *EntityEvent
		var distinct map[string]struct{}
		var elem []byte
		vals = vals[:0]
		for i := range events {
			ev := &events[i]
			if ev.Time < lo || ev.Time >= hi || arrivedBy && ev.Arrival > asOf {
				continue
			}
			if f.pos < 0 {
				n++
				continue
			}
			v := ev.Values[f.pos]
			if v.Null() {
				continue
			}
			switch m.Kind {
			case Count:
				n++
			case Sum, Avg:
				sum += v.Float()
				n++
			case Min:
				if n == 0 || v.Float() < mn {
					mn = v.Float()
				}
				n++
			case Max:
				if n == 0 || v.Float() > mx {
					mx = v.Float()
				}
				n++
			case CountDistinct:
				if distinct == nil {
					distinct = map[string]struct{}{}
				}
				elem = AppendDistinctElem(elem[:0], v)
				distinct[string(elem)] = struct{}{}
			case Quantile:
				vals = append(vals, v.Float())
			case Last:
				if best == nil || ev.Compare(best) > 0 {
					best = ev
				}
			case First:
				if best == nil || ev.Compare(best) < 0 {
					best = ev
				}
			}
		}
		out[fi] = finishFeature(m, n, sum, mn, mx, distinct, vals, best, f.pos)
	}
	return out
}

// finishFeature turns a feature's accumulated values into its answer.
func finishFeature(m *Measure, n int, sum, mn, mx float64, distinct map[string]struct{}, vals []float64, best *EntityEvent, pos int) Value {
	asType := func(x float64) Value {
		if m.ResultType() == TypeInt {
			if x < -int64Range || x >= int64Range {
				return Value{}
			}
			return Value{Kind: TypeInt, I: int64(x)}
		}
		if !finite(x) {
			return Value{}
		}
		return Value{Kind: TypeFloat, F: x}
	}
	switch m.Kind {
	case Count:
		return Value{Kind: TypeInt, I: int64(n)}
	case CountDistinct:
		return Value{Kind: TypeInt, I: int64(len(distinct))}
	case Sum:
		if n == 0 {
			return Value{}
		}
		return asType(sum)
	case Avg:
		if n == 0 {
			return Value{}
		}
		return asType(sum / float64(n))
	case Min:
		if n == 0 {
			return Value{}
		}
		return asType(mn)
	case Max:
		if n == 0 {
			return Value{}
		}
		return asType(mx)
	case Quantile:
		if len(vals) == 0 {
			return Value{}
		}
		slices.Sort(vals)
		r := m.Q * float64(len(vals)-1)
		lo, hi := math.Floor(r), math.Ceil(r)
		return asType(quantileCont(vals[int(lo)], vals[int(hi)], r-lo))
	case Last, First:
		if best == nil {
			return Value{}
		}
		return best.Values[pos]
	}
	return Value{}
}
