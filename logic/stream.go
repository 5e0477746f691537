package logic

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
	MaxFuture       time.Duration // events further ahead of the clock are rejected (0: no check)
	Strict          bool          // reject unknown fields instead of dropping them
	DedupContent    bool          // events without an id get one derived from their content
	MaxValueBytes   int           // longest accepted string value
}

// Stream is a compiled stream schema. It is immutable and safe for
// concurrent use.
type Stream struct {
	Name            string
	Fields          []Field // sorted by name
	TimeField       int
	IDField         int // -1 when the stream has no id field
	AllowedLateness time.Duration
	MaxFuture       time.Duration
	Strict          bool
	DedupContent    bool
	MaxValueBytes   int

	index  map[string]int
	piiKey []byte
}

// DefaultMaxValueBytes bounds a string value when the stream sets no limit.
const DefaultMaxValueBytes = 64 << 10

// NewStream compiles a stream definition. piiKey keys the HMAC of hashed
// fields; it must stay the same for the life of the data.
func NewStream(name string, def StreamDef, piiKey []byte) (*Stream, error) {
	s := &Stream{Name: name, IDField: -1, AllowedLateness: def.AllowedLateness, MaxFuture: def.MaxFuture,
		Strict: def.Strict, DedupContent: def.DedupContent, MaxValueBytes: def.MaxValueBytes,
		index: map[string]int{}, piiKey: piiKey}
	if s.MaxValueBytes <= 0 {
		s.MaxValueBytes = DefaultMaxValueBytes
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
	t, ok := s.index[def.Time]
	if !ok {
		return nil, fmt.Errorf("time field %q is not a declared field", def.Time)
	}
	if ft := s.Fields[t].Type; ft != TypeTime && ft != TypeInt {
		return nil, fmt.Errorf("time field %q has type %s, want time", def.Time, ft)
	}
	s.TimeField = t
	s.Fields[t].Required = true
	if def.ID != "" {
		i, ok := s.index[def.ID]
		if !ok {
			return nil, fmt.Errorf("id field %q is not a declared field", def.ID)
		}
		if ft := s.Fields[i].Type; ft != TypeString && ft != TypeInt {
			return nil, fmt.Errorf("id field %q has type %s, want string or int", def.ID, ft)
		}
		s.IDField = i
	}
	for _, r := range def.Required {
		i, ok := s.index[r]
		if !ok {
			return nil, fmt.Errorf("required field %q is not a declared field", r)
		}
		s.Fields[i].Required = true
	}
	for f, m := range def.PII {
		i, ok := s.index[f]
		if !ok {
			return nil, fmt.Errorf("pii field %q is not a declared field", f)
		}
		if s.Fields[i].Type != TypeString {
			return nil, fmt.Errorf("pii field %q has type %s, want string", f, s.Fields[i].Type)
		}
		if i == s.IDField && m != PIIHash {
			return nil, fmt.Errorf("pii field %q is the id field: only hash keeps ids distinct", f)
		}
		s.Fields[i].PII = m
	}
	return s, nil
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
		ev.ID = "c:" + hex.EncodeToString(sum[:16])
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
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		if bytes.TrimSpace(raw) == nil || len(bytes.TrimSpace(raw)) == 0 {
			return Event{}, reject("", "empty event")
		}
		return Event{}, reject("", "invalid JSON: %s", jsonReason(err))
	}
	if obj == nil {
		return Event{}, reject("", "event is not a JSON object")
	}
	if dec.More() {
		return Event{}, reject("", "invalid JSON: trailing data after the object")
	}
	ev := Event{Values: make([]Value, len(s.Fields))}
	for k, raw := range obj {
		i, ok := s.index[k]
		if !ok {
			if s.Strict && !trusted {
				return Event{}, reject(k, "unknown field (the stream is strict)")
			}
			continue
		}
		f := &s.Fields[i]
		v, err := s.value(f, raw)
		if err != nil {
			return Event{}, err
		}
		if mask && f.PII != PIINone && v.Kind == TypeString {
			v.S = s.mask(f.PII, v.S)
		}
		ev.Values[i] = v
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

func jsonReason(err error) string {
	msg := err.Error()
	return strings.TrimPrefix(msg, "json: ")
}

func (s *Stream) value(f *Field, raw any) (Value, error) {
	if raw == nil {
		return Value{}, nil
	}
	switch f.Type {
	case TypeString:
		str, ok := raw.(string)
		if !ok {
			return Value{}, reject(f.Name, "want a string, got %s", jsonKind(raw))
		}
		if len(str) > s.MaxValueBytes {
			return Value{}, reject(f.Name, "value of %d bytes is longer than the limit of %d", len(str), s.MaxValueBytes)
		}
		return Value{Kind: TypeString, S: str}, nil
	case TypeInt:
		n, ok := raw.(json.Number)
		if !ok {
			return Value{}, reject(f.Name, "want an integer, got %s", jsonKind(raw))
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			fv, ferr := strconv.ParseFloat(string(n), 64)
			if ferr != nil || fv != math.Trunc(fv) || fv < -9.2e18 || fv > 9.2e18 {
				return Value{}, reject(f.Name, "want an integer, got %s", n)
			}
			i = int64(fv)
		}
		return Value{Kind: TypeInt, I: i}, nil
	case TypeFloat:
		n, ok := raw.(json.Number)
		if !ok {
			return Value{}, reject(f.Name, "want a number, got %s", jsonKind(raw))
		}
		fv, err := strconv.ParseFloat(string(n), 64)
		if err != nil || !finite(fv) {
			return Value{}, reject(f.Name, "number %s is out of range", n)
		}
		return Value{Kind: TypeFloat, F: fv}, nil
	case TypeBool:
		b, ok := raw.(bool)
		if !ok {
			return Value{}, reject(f.Name, "want true or false, got %s", jsonKind(raw))
		}
		v := Value{Kind: TypeBool}
		if b {
			v.I = 1
		}
		return v, nil
	case TypeTime:
		ms, err := parseTime(raw)
		if err != nil {
			return Value{}, reject(f.Name, "%s", err)
		}
		return Value{Kind: TypeTime, I: ms}, nil
	}
	return Value{}, reject(f.Name, "unsupported type %s", f.Type)
}

// parseTime reads an RFC 3339 string or epoch milliseconds.
func parseTime(raw any) (int64, error) {
	var ms int64
	switch v := raw.(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return 0, fmt.Errorf("bad time %q: want RFC 3339 or epoch milliseconds", v)
		}
		if t.Year() < 1970 || t.Year() > 9999 {
			return 0, fmt.Errorf("time %q is outside 1970..9999", v)
		}
		ms = t.UnixMilli()
	case json.Number:
		i, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(string(v), 64)
			if ferr != nil || !finite(f) || f < -9.2e18 || f > 9.2e18 {
				return 0, fmt.Errorf("bad time %s: want epoch milliseconds", v)
			}
			i = int64(f)
		}
		ms = i
	default:
		return 0, fmt.Errorf("want a time, got %s", jsonKind(raw))
	}
	if ms < MinTimeMs || ms > MaxTimeMs {
		return 0, fmt.Errorf("time %d ms is outside 1970..9999", ms)
	}
	return ms, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "null"
}

func (s *Stream) mask(m PIIMode, v string) string {
	switch m {
	case PIIHash:
		h := hmac.New(sha256.New, s.piiKey)
		h.Write([]byte(v))
		return "h:" + hex.EncodeToString(h.Sum(nil)[:16])
	case PIIRedact:
		return "[redacted]"
	case PIIMask:
		return maskString(v)
	}
	return v
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

// MaskPayload masks the PII fields of a raw payload that may be invalid for
// the schema (for the dead-letter queue). When the payload is not a JSON
// object it is returned as is, unless the stream has PII fields, in which
// case it is replaced by a note: raw PII never reaches the log.
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
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return []byte(fmt.Sprintf("%q", "[payload withheld: not a JSON object and the stream has PII fields]"))
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
	b := make([]byte, 0, 64+16*len(s.Fields))
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
		b = strconv.AppendQuote(b, s.Fields[i].Name)
		b = append(b, ':')
		switch v.Kind {
		case TypeString:
			js, _ := json.Marshal(v.S)
			b = append(b, js...)
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
