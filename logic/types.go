package logic

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// FieldType is the declared type of a stream field.
type FieldType uint8

// The field types a stream schema may declare.
const (
	TypeNull FieldType = iota // only as a Value's kind: the field is absent or null
	TypeString
	TypeInt
	TypeFloat
	TypeBool
	TypeTime // event-time field: RFC 3339 string or epoch milliseconds; stored as ms
)

var typeNames = map[FieldType]string{TypeNull: "null", TypeString: "string", TypeInt: "int", TypeFloat: "float", TypeBool: "bool", TypeTime: "time"}

func (t FieldType) String() string { return typeNames[t] }

// ParseFieldType reads a type name of the configuration.
func ParseFieldType(s string) (FieldType, error) {
	for t, n := range typeNames {
		if n == s && t != TypeNull {
			return t, nil
		}
	}
	return TypeNull, fmt.Errorf("unknown field type %q (want string, int, float, bool or time)", s)
}

// ReadableAs reports whether values stored as type held can be read as
// type declared: the same type, or an int read as a float (widening, exact
// up to 2^53). Every other change (string and int either way, float to
// int, bool or time to or from anything) would mix types in one field or
// lose values, so stored data of the old type cannot be read under the new.
func ReadableAs(held, declared FieldType) bool {
	return held == declared || held == TypeInt && declared == TypeFloat
}

// Value is one field's value after Prepare. The zero Value is null.
// Ints, bools (0/1) and times (unix ms) live in I; floats in F; strings in S.
type Value struct {
	Kind FieldType
	I    int64
	F    float64
	S    string
}

// Null reports whether the value is absent.
func (v Value) Null() bool { return v.Kind == TypeNull }

// Float returns the value as a float64 (for numeric measures).
func (v Value) Float() float64 {
	if v.Kind == TypeFloat {
		return v.F
	}
	return float64(v.I)
}

// Any returns the value as a plain Go value for JSON output: nil, string,
// int64, float64, bool, or an RFC 3339 string for times.
func (v Value) Any() any {
	switch v.Kind {
	case TypeString:
		return v.S
	case TypeInt:
		return v.I
	case TypeFloat:
		return v.F
	case TypeBool:
		return v.I != 0
	case TypeTime:
		return FormatTime(v.I)
	}
	return nil
}

// String renders the value for keys and CSV.
func (v Value) String() string {
	switch v.Kind {
	case TypeString:
		return v.S
	case TypeInt:
		return strconv.FormatInt(v.I, 10)
	case TypeFloat:
		return strconv.FormatFloat(v.F, 'g', -1, 64)
	case TypeBool:
		return strconv.FormatBool(v.I != 0)
	case TypeTime:
		return FormatTime(v.I)
	}
	return ""
}

// Event is a prepared event: its id (may be empty), its event time in unix
// milliseconds and its field values, indexed like Stream.Fields.
type Event struct {
	ID     string
	Time   int64
	Values []Value
}

// FormatTime renders unix milliseconds as RFC 3339 in UTC.
func FormatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// Limits of event times Braid accepts: 1970-01-01 up to 9999-12-31.
const (
	MinTimeMs int64 = 0
	MaxTimeMs int64 = 253402300799999
)

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
