package logic

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/braid-data/braid/logic/defaults"
)

// PIIMode says how a personal field is masked before it reaches the log.
type PIIMode uint8

// PII masking modes.
const (
	PIINone   PIIMode = iota
	PIIHash           // keyed HMAC-SHA256, hex: equal inputs stay equal (joins, distinct counts)
	PIIRedact         // replaced by "[redacted]"
	PIIMask           // all but a few characters replaced by '*'
)

// ParsePIIMode reads a masking mode of the configuration.
func ParsePIIMode(s string) (PIIMode, error) {
	switch s {
	case "hash":
		return PIIHash, nil
	case "redact":
		return PIIRedact, nil
	case "mask":
		return PIIMask, nil
	}
	return PIINone, fmt.Errorf("unknown pii mode %q (want hash, redact or mask)", s)
}

// Field is one declared field of a stream.
type Field struct {
	Name     string
	Type     FieldType
	Required bool
	PII      PIIMode
}

// StreamDef is a stream as the configuration declares it.
type StreamDef struct {
	Time            string               // event-time field
	ID              string               // optional id field: duplicates within the dedup window are stored once
	Fields          map[string]FieldType // declared fields
	Required        []string
	PII             map[string]PIIMode
	AllowedLateness time.Duration
	MaxFuture       time.Duration // events further ahead of the clock are rejected (0: no check); also the watermark's lead past arrival (WatermarkLead)
	Strict          bool          // reject unknown fields instead of dropping them
	DedupContent    bool          // events without an id get one derived from their content
	MaxValueBytes   int           // longest accepted string value
	// Partitions splits the stream's log (and its speed state) into this
	// many partitions (0 or 1: one); PartitionBy names the field whose
	// value picks an event's partition ("": the event's id, else round
	// robin). See PartitionOf.
	Partitions  int
	PartitionBy string
}

// Stream is a compiled stream schema. It is immutable and safe for
// concurrent use.
type Stream struct {
	Name            string
	Fields          []Field // sorted by name
	TimeField       int
	IDField         int // -1 when the stream has no id field
	AllowedLateness time.Duration
	MaxFuture       time.Duration // 0: no check at ingest, and the watermark's lead is defaults.WatermarkLead
	Strict          bool
	DedupContent    bool
	MaxValueBytes   int
	Partitions      int // at least 1
	PartitionField  int // the field picking an event's partition; -1: the event's id (round robin without one)

	index   map[string]int
	piiKey  []byte
	keys    [][]byte    // Encode's quoted field names, with the ':'
	table   *fieldTable // nil: look names up in index
	hashers *sync.Pool  // of *piiHasher
	digests *sync.Pool  // of *piiHasher, for Digest
}

// NewStream compiles a stream definition. piiKey keys the HMAC of hashed
// fields; it must stay the same for the life of the data.
func NewStream(name string, def StreamDef, piiKey []byte) (*Stream, error) {
	var first error
	s := buildStream(name, def, piiKey, func(_ string, err error) {
		if first == nil {
			first = err
		}
	})
	if first != nil {
		return nil, first
	}
	return s, nil
}

// DefError is one mistake of a stream or view definition and the key of
// the definition it is about: "time", "id", "required[1]", "pii.email" of
// a stream; "window", "hop", "where", "group_by[0]", "measures" or
// "measures.<name>" of a view.
type DefError struct {
	Key string
	Err error
}

func (e DefError) Error() string { return e.Err.Error() }

func (e DefError) Unwrap() error { return e.Err }

// CheckStream lists every mistake of a stream definition, where NewStream
// stops at the first. The stream it returns leaves out what is mistaken
// (its TimeField is -1 when the time field is) so that the views over it
// can be checked too; it is only for CheckView.
func CheckStream(name string, def StreamDef) (*Stream, []DefError) {
	var errs []DefError
	s := buildStream(name, def, []byte("check"), func(key string, err error) {
		errs = append(errs, DefError{Key: key, Err: err})
	})
	return s, errs
}

// buildStream compiles a stream definition, reporting each mistake with
// its key and going on without the mistaken part.
func buildStream(name string, def StreamDef, piiKey []byte, report func(key string, err error)) *Stream {
	s := &Stream{Name: name, TimeField: -1, IDField: -1, AllowedLateness: def.AllowedLateness, MaxFuture: def.MaxFuture,
		Strict: def.Strict, DedupContent: def.DedupContent, MaxValueBytes: def.MaxValueBytes,
		Partitions: max(1, def.Partitions), PartitionField: -1,
		index: map[string]int{}, piiKey: piiKey}
	if s.MaxValueBytes <= 0 {
		s.MaxValueBytes = defaults.StreamMaxValueBytes
	}
	names := make([]string, 0, len(def.Fields))
	for n := range def.Fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		s.Fields = append(s.Fields, Field{Name: n, Type: def.Fields[n]})
		s.index[n] = i
	}
	if t, ok := s.index[def.Time]; !ok {
		report("time", fmt.Errorf("time field %q is not a declared field", def.Time))
	} else if ft := s.Fields[t].Type; ft != TypeTime && ft != TypeInt {
		report("time", fmt.Errorf("time field %q has type %s, want time", def.Time, ft))
	} else {
		s.TimeField = t
		s.Fields[t].Required = true
	}
	if def.ID != "" {
		if i, ok := s.index[def.ID]; !ok {
			report("id", fmt.Errorf("id field %q is not a declared field", def.ID))
		} else if ft := s.Fields[i].Type; ft != TypeString && ft != TypeInt {
			report("id", fmt.Errorf("id field %q has type %s, want string or int", def.ID, ft))
		} else {
			s.IDField = i
		}
	}
	if def.PartitionBy != "" {
		if i, ok := s.index[def.PartitionBy]; !ok {
			report("partition_by", fmt.Errorf("partition_by field %q is not a declared field", def.PartitionBy))
		} else {
			s.PartitionField = i
		}
	}
	if def.Partitions < 0 || def.Partitions > MaxPartitions {
		report("partitions", fmt.Errorf("partitions %d: want 1 to %d", def.Partitions, MaxPartitions))
	}
	for n, r := range def.Required {
		if i, ok := s.index[r]; !ok {
			report(fmt.Sprintf("required[%d]", n), fmt.Errorf("required field %q is not a declared field", r))
		} else {
			s.Fields[i].Required = true
		}
	}
	pii := make([]string, 0, len(def.PII))
	for f := range def.PII {
		pii = append(pii, f)
	}
	sort.Strings(pii)
	for _, f := range pii {
		m := def.PII[f]
		i, ok := s.index[f]
		switch {
		case !ok:
			report("pii."+f, fmt.Errorf("pii field %q is not a declared field", f))
		case s.Fields[i].Type != TypeString:
			report("pii."+f, fmt.Errorf("pii field %q has type %s, want string", f, s.Fields[i].Type))
		case i == s.IDField && m != PIIHash:
			report("pii."+f, fmt.Errorf("pii field %q is the id field: only hash keeps ids distinct", f))
		default:
			s.Fields[i].PII = m
		}
	}
	s.keys = quotedKeys(s.Fields)
	s.table = newFieldTable(s.Fields)
	key := s.piiKey
	s.hashers = &sync.Pool{New: func() any { return &piiHasher{mac: hmac.New(sha256.New, key)} }}
	s.digests = &sync.Pool{New: func() any { return &piiHasher{mac: hmac.New(sha256.New, key)} }}
	return s
}

// FieldIndex returns the index of a field in Fields, or -1.
func (s *Stream) FieldIndex(name string) int {
	if i, ok := s.index[name]; ok {
		return i
	}
	return -1
}

// Prepare turns one raw JSON event into a prepared Event and the canonical
// record stored in the log: a JSON object with the declared fields only, in
// name order, PII masked, times as epoch milliseconds. nowMs is the clock
// used for the future-skew check. A *RejectError says why an event is refused.
func (s *Stream) Prepare(raw []byte, nowMs int64) (Event, []byte, error) {
	return s.prepare(raw, nowMs, true)
}

// PrepareMasked is Prepare for a payload whose PII fields are already
// masked (a dead letter's payload, replayed): it does not mask them again.
func (s *Stream) PrepareMasked(raw []byte, nowMs int64) (Event, []byte, error) {
	return s.prepare(raw, nowMs, false)
}

func (s *Stream) prepare(raw []byte, nowMs int64, mask bool) (Event, []byte, error) {
	if !utf8.Valid(raw) {
		return Event{}, nil, reject("", "invalid UTF-8")
	}
	ev, err := s.parse(raw, false, mask)
	if err != nil {
		return Event{}, nil, err
	}
	if s.MaxFuture > 0 && ev.Time > nowMs+s.MaxFuture.Milliseconds() {
		return Event{}, nil, reject(s.Fields[s.TimeField].Name, "event time %s is more than %s ahead of the clock", FormatTime(ev.Time), s.MaxFuture)
	}
	rec := s.Encode(ev)
	if ev.ID == "" && s.DedupContent {
		sum := sha256.Sum256(rec)
		var id [2 + 32]byte
		id[0], id[1] = 'c', ':'
		hex.Encode(id[2:], sum[:16])
		ev.ID = string(id[:])
	}
	return ev, rec, nil
}

// Decode reads a canonical record written by Prepare back into an Event.
func (s *Stream) Decode(rec []byte) (Event, error) {
	ev, err := s.parse(rec, true, false)
	if err != nil {
		return Event{}, fmt.Errorf("decode %s record: %w", s.Name, err)
	}
	return ev, nil
}

func (s *Stream) parse(raw []byte, trusted, mask bool) (Event, error) {
	sc := jsonScanner{data: raw}
	c, ok := sc.next()
	if !ok {
		return Event{}, reject("", "empty event")
	}
	if c != '{' {
		return Event{}, notAnObject(&sc, raw)
	}
	sc.pos++
	sc.depth = 1
	ev := Event{Values: make([]Value, len(s.Fields))}
	// Schema violations wait until the whole object is known to be valid
	// JSON (invalid JSON anywhere wins), and a later duplicate of a key
	// replaces an earlier one, error and all, as in a decoded map. They are
	// kept in the order of their keys.
	var pending []pendingReject
	if c, ok = sc.next(); !ok {
		return Event{}, syntaxReject(&sc, raw)
	}
	if c == '}' {
		sc.pos++
	} else {
		for {
			if c != '"' {
				sc.fail(c, "looking for beginning of object key string")
				return Event{}, syntaxReject(&sc, raw)
			}
			key, ok := sc.scanString()
			if !ok {
				return Event{}, syntaxReject(&sc, raw)
			}
			i, known := s.lookup(key)
			if !known && s.Strict && !trusted && !hasUnknown(pending) {
				pending = append(pending, pendingReject{field: -1, err: reject(string(key), "unknown field (the stream is strict)")})
			}
			if c, ok = sc.next(); !ok {
				return Event{}, syntaxReject(&sc, raw)
			}
			if c != ':' {
				sc.fail(c, "after object key")
				return Event{}, syntaxReject(&sc, raw)
			}
			sc.pos++
			if _, ok = sc.next(); !ok {
				return Event{}, syntaxReject(&sc, raw)
			}
			if !known {
				if !sc.skipValue() {
					return Event{}, syntaxReject(&sc, raw)
				}
			} else {
				kind, b, ok := sc.scanValue()
				if !ok {
					return Event{}, syntaxReject(&sc, raw)
				}
				f := &s.Fields[i]
				v, err := s.value(f, kind, b, mask)
				if len(pending) > 0 {
					pending = dropPending(pending, i)
				}
				if err != nil {
					pending = append(pending, pendingReject{field: i, err: err})
				}
				ev.Values[i] = v
			}
			if c, ok = sc.next(); !ok {
				return Event{}, syntaxReject(&sc, raw)
			}
			sc.pos++
			if c == '}' {
				break
			}
			if c != ',' {
				sc.fail(c, "after object key:value pair")
				return Event{}, syntaxReject(&sc, raw)
			}
			if c, ok = sc.next(); !ok {
				return Event{}, syntaxReject(&sc, raw)
			}
		}
	}
	// Anything but whitespace after the object is trailing data.
	sc.skipSpace()
	if sc.pos < len(raw) {
		return Event{}, reject("", "invalid JSON: trailing data after the object")
	}
	if len(pending) > 0 {
		return Event{}, pending[0].err
	}
	for i := range s.Fields {
		if s.Fields[i].Required && ev.Values[i].Null() {
			return Event{}, reject(s.Fields[i].Name, "required field is missing")
		}
	}
	ev.Time = ev.Values[s.TimeField].I
	if s.IDField >= 0 {
		ev.ID = ev.Values[s.IDField].String()
	}
	return ev, nil
}

// lookup finds the declared field named key.
func (s *Stream) lookup(key []byte) (int, bool) {
	if s.table != nil {
		i := s.table.find(key)
		return i, i >= 0
	}
	i, ok := s.index[string(key)]
	return i, ok
}

// pendingReject is a schema violation found while scanning an event.
type pendingReject struct {
	field int // -1: an unknown field of a strict stream
	err   *RejectError
}

func hasUnknown(p []pendingReject) bool {
	for _, r := range p {
		if r.field < 0 {
			return true
		}
	}
	return false
}

// dropPending forgets the violation of field i: a later duplicate key
// replaces the value.
func dropPending(p []pendingReject, i int) []pendingReject {
	for k := range p {
		if p[k].field == i {
			return append(p[:k], p[k+1:]...)
		}
	}
	return p
}

// syntaxReject is the rejection of input that is not valid JSON.
func syntaxReject(sc *jsonScanner, raw []byte) *RejectError {
	if len(bytes.TrimSpace(raw)) == 0 {
		return reject("", "empty event")
	}
	return reject("", "invalid JSON: %s", sc.msg)
}

// notAnObject is the rejection of a top-level value that is not an object,
// its first byte at sc.pos: as encoding/json, a syntax error if it is not
// valid JSON, else a type error (null is "not a JSON object").
func notAnObject(sc *jsonScanner, raw []byte) *RejectError {
	kind, _, ok := sc.scanValue()
	if !ok {
		return syntaxReject(sc, raw)
	}
	if kind == jsonNull {
		return reject("", "event is not a JSON object")
	}
	return reject("", "invalid JSON: cannot unmarshal %s into Go value of type map[string]interface {}", kind.goName())
}

// value converts one scanned value of a declared field: kind and b as
// jsonScanner.scanValue returns them.
func (s *Stream) value(f *Field, kind jsonKindOf, b []byte, mask bool) (Value, *RejectError) {
	if kind == jsonNull {
		return Value{}, nil
	}
	switch f.Type {
	case TypeString:
		if kind != jsonString {
			return Value{}, reject(f.Name, "want a string, got %s", kind.describe())
		}
		if len(b) > s.MaxValueBytes {
			return Value{}, reject(f.Name, "value of %d bytes is longer than the limit of %d", len(b), s.MaxValueBytes)
		}
		if mask && f.PII != PIINone {
			return Value{Kind: TypeString, S: s.maskBytes(f.PII, b)}, nil
		}
		return Value{Kind: TypeString, S: string(b)}, nil
	case TypeInt:
		if kind != jsonNumber {
			return Value{}, reject(f.Name, "want an integer, got %s", kind.describe())
		}
		i, ok := parseIntLiteral(b)
		if !ok {
			return Value{}, reject(f.Name, "want an integer, got %s", b)
		}
		return Value{Kind: TypeInt, I: i}, nil
	case TypeFloat:
		if kind != jsonNumber {
			return Value{}, reject(f.Name, "want a number, got %s", kind.describe())
		}
		fv, err := strconv.ParseFloat(string(b), 64)
		if err != nil || !finite(fv) {
			return Value{}, reject(f.Name, "number %s is out of range", b)
		}
		return Value{Kind: TypeFloat, F: fv}, nil
	case TypeBool:
		switch kind {
		case jsonTrue:
			return Value{Kind: TypeBool, I: 1}, nil
		case jsonFalse:
			return Value{Kind: TypeBool}, nil
		}
		return Value{}, reject(f.Name, "want true or false, got %s", kind.describe())
	case TypeTime:
		ms, err := parseTime(kind, b)
		if err != nil {
			return Value{}, reject(f.Name, "%s", err)
		}
		return Value{Kind: TypeTime, I: ms}, nil
	}
	return Value{}, reject(f.Name, "unsupported type %s", f.Type)
}

// parseIntLiteral reads a JSON number as an int64: integers in range, and
// numbers like 3.0 or 1e3 whose value is a whole number within ±9.2e18.
func parseIntLiteral(b []byte) (int64, bool) {
	if n := len(b); n > 0 && n <= 19 {
		// Fast path: at most 18 digits, optionally negative, cannot overflow.
		neg := b[0] == '-'
		d := b
		if neg {
			d = b[1:]
		}
		if len(d) > 0 && len(d) <= 18 {
			var v int64
			for _, c := range d {
				if !isJSONDigit(c) {
					goto slow
				}
				v = v*10 + int64(c-'0')
			}
			if neg {
				v = -v
			}
			return v, true
		}
	}
slow:
	i, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		fv, ferr := strconv.ParseFloat(string(b), 64)
		if ferr != nil || fv != math.Trunc(fv) || fv < -9.2e18 || fv > 9.2e18 {
			return 0, false
		}
		i = int64(fv)
	}
	return i, true
}

// parseTime reads an RFC 3339 string or epoch milliseconds.
func parseTime(kind jsonKindOf, b []byte) (int64, error) {
	var ms int64
	switch kind {
	case jsonString:
		t, err := time.Parse(time.RFC3339Nano, string(b))
		if err != nil {
			return 0, fmt.Errorf("bad time %q: want RFC 3339 or epoch milliseconds", string(b))
		}
		if t.Year() < 1970 || t.Year() > 9999 {
			return 0, fmt.Errorf("time %q is outside 1970..9999", string(b))
		}
		ms = t.UnixMilli()
	case jsonNumber:
		i, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(string(b), 64)
			if ferr != nil || !finite(f) || f < -9.2e18 || f > 9.2e18 {
				return 0, fmt.Errorf("bad time %s: want epoch milliseconds", b)
			}
			i = int64(f)
		}
		ms = i
	default:
		return 0, fmt.Errorf("want a time, got %s", kind.describe())
	}
	if ms < MinTimeMs || ms > MaxTimeMs {
		return 0, fmt.Errorf("time %d ms is outside 1970..9999", ms)
	}
	return ms, nil
}

func (s *Stream) mask(m PIIMode, v string) string {
	switch m {
	case PIIHash:
		return s.hashPII([]byte(v))
	case PIIRedact:
		return "[redacted]"
	case PIIMask:
		return maskString(v)
	}
	return v
}

// maskBytes is mask for a value still in bytes: the hash is taken without
// a copy of the raw value.
func (s *Stream) maskBytes(m PIIMode, v []byte) string {
	switch m {
	case PIIHash:
		return s.hashPII(v)
	case PIIRedact:
		return "[redacted]"
	}
	return s.mask(m, string(v))
}

// piiHasher is a keyed HMAC-SHA256 with room for its output, reused
// through Stream.hashers: the keyed state is set up once, not per value.
type piiHasher struct {
	mac hash.Hash
	sum [sha256.Size]byte
	out [2 + 32]byte
}

// hashPII is "h:" and the hex of the first 16 bytes of HMAC-SHA256(piiKey, v).
func (s *Stream) hashPII(v []byte) string {
	var h *piiHasher
	if s.hashers != nil {
		h = s.hashers.Get().(*piiHasher)
		h.mac.Reset()
	} else {
		h = &piiHasher{mac: hmac.New(sha256.New, s.piiKey)}
	}
	h.mac.Write(v)
	sum := h.mac.Sum(h.sum[:0])
	h.out[0], h.out[1] = 'h', ':'
	hex.Encode(h.out[2:], sum[:16])
	out := string(h.out[:])
	if s.hashers != nil {
		s.hashers.Put(h)
	}
	return out
}

// Digest names raw input without revealing it: the hex of the first 16
// bytes of HMAC-SHA256 under the stream's PII key over the parts, each
// after its length (so no two part lists collide). Dead letters take
// their ids from it: their payloads may hold PII.
func (s *Stream) Digest(parts ...[]byte) string {
	var b [32]byte
	return string(s.AppendDigest(b[:0], parts...))
}

// AppendDigest appends Digest of the parts to dst.
func (s *Stream) AppendDigest(dst []byte, parts ...[]byte) []byte {
	var h *piiHasher
	if s.digests != nil {
		h = s.digests.Get().(*piiHasher)
		h.mac.Reset()
	} else {
		h = &piiHasher{mac: hmac.New(sha256.New, s.piiKey)}
	}
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.mac.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.mac.Write(p)
	}
	sum := h.mac.Sum(h.sum[:0])
	dst = hex.AppendEncode(dst, sum[:16])
	if s.digests != nil {
		s.digests.Put(h)
	}
	return dst
}

// maskString keeps the first character of an e-mail's local part and its
// domain, or the last four characters of anything else.
func maskString(v string) string {
	r := []rune(v)
	if at := strings.LastIndexByte(v, '@'); at > 0 {
		local := []rune(v[:at])
		return string(local[0]) + strings.Repeat("*", len(local)-1) + v[at:]
	}
	keep := 4
	if len(r) <= keep*2 {
		keep = 0
	}
	return strings.Repeat("*", len(r)-keep) + string(r[len(r)-keep:])
}

// withheld is the dead-letter payload of an event that is not a JSON
// object on a stream with PII fields.
var withheld = []byte(`"[payload withheld: not a JSON object and the stream has PII fields]"`)

// MaskPayload masks the PII fields of a raw payload that may be invalid for
// the schema (for the dead-letter queue). When the payload is not a JSON
// object (anything else, or an object followed by more data) it is
// returned as is, unless the stream has PII fields, in which case it is
// replaced by a note: raw PII never reaches the log. Such a payload could
// never be replayed anyway: no configuration accepts an event that is not
// a JSON object.
func (s *Stream) MaskPayload(raw []byte) []byte {
	var obj map[string]any
	hasPII := false
	for _, f := range s.Fields {
		if f.PII != PIINone {
			hasPII = true
		}
	}
	if !hasPII {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if !json.Valid(raw) {
		return withheld
	}
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return withheld
	}
	for _, f := range s.Fields {
		if f.PII == PIINone {
			continue
		}
		if v, ok := obj[f.Name]; ok && v != nil {
			obj[f.Name] = s.mask(f.PII, fmt.Sprint(v))
		}
	}
	out, _ := json.Marshal(obj)
	return out
}

// Encode renders an event as its canonical record.
func (s *Stream) Encode(ev Event) []byte {
	keys := s.keys
	if len(keys) != len(s.Fields) {
		keys = quotedKeys(s.Fields)
	}
	size := 2
	for i, v := range ev.Values {
		switch v.Kind {
		case TypeNull:
			continue
		case TypeString:
			size += len(v.S) + 2
		default:
			size += 24
		}
		size += len(keys[i]) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	first := true
	for i, v := range ev.Values {
		if v.Null() {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, keys[i]...)
		switch v.Kind {
		case TypeString:
			b = appendJSONString(b, v.S)
		case TypeInt, TypeTime:
			b = strconv.AppendInt(b, v.I, 10)
		case TypeFloat:
			b = strconv.AppendFloat(b, v.F, 'g', -1, 64)
		case TypeBool:
			b = strconv.AppendBool(b, v.I != 0)
		}
	}
	return append(b, '}')
}

// quotedKeys renders each field's name as a record key: quoted (as
// strconv.Quote, which records have always used) and followed by ':'.
func quotedKeys(fields []Field) [][]byte {
	keys := make([][]byte, len(fields))
	for i, f := range fields {
		keys[i] = append(strconv.AppendQuote(nil, f.Name), ':')
	}
	return keys
}
