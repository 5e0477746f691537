package logic

import (
	"fmt"
	"time"
)

// FeatureDef is one feature of an entity as the configuration declares it.
type FeatureDef struct {
	Name    string
	Measure string        // count(), sum(amount), last(country), ...
	Over    time.Duration // the window ending at as_of; 0: all history kept
}

// EntityDef is an entity as the configuration declares it: per-key
// features over one stream.
type EntityDef struct {
	Stream   string
	Key      string
	Features []FeatureDef
}

// Feature is a compiled feature: a measure over the key's events with
// event time in [as_of − Over, as_of).
type Feature struct {
	Name    string
	Measure Measure
	Over    time.Duration

	pos int // index of the measure's field in the entity's fields (Entity.Fields), -1 for count()
}

// Entity is a compiled entity. It is immutable and safe for concurrent use.
type Entity struct {
	Name     string
	Stream   *Stream
	Key      string
	Features []Feature

	key    int   // index of Key in the stream's fields
	fields []int // the stream fields the features read, in stream order (entityfold.go)
	def    string
}

// NewEntity compiles an entity over its stream.
func NewEntity(name string, def EntityDef, s *Stream) (*Entity, error) {
	errs := CheckEntity(name, def, s)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	e := &Entity{Name: name, Stream: s, Key: def.Key, key: s.FieldIndex(def.Key)}
	for _, fd := range def.Features {
		m, _ := ParseMeasure(MeasureDef{Name: fd.Name, Expr: fd.Measure}, s)
		e.Features = append(e.Features, Feature{Name: fd.Name, Measure: m, Over: fd.Over})
	}
	e.init()
	return e, nil
}

// CheckEntity lists every mistake of an entity definition, each with its
// key under the entity (key, features.<name>...).
func CheckEntity(name string, def EntityDef, s *Stream) []DefError {
	var errs []DefError
	if i := s.FieldIndex(def.Key); i < 0 {
		errs = append(errs, DefError{Key: "key", Err: fmt.Errorf("key: field %q is not declared in stream %s", def.Key, s.Name)})
	} else if t := s.Fields[i].Type; t != TypeString && t != TypeInt {
		errs = append(errs, DefError{Key: "key", Err: fmt.Errorf("key: field %q has type %s; entity keys are string or int", def.Key, t)})
	}
	if len(def.Features) == 0 {
		errs = append(errs, DefError{Key: "features", Err: fmt.Errorf("features: an entity needs at least one feature")})
	}
	seen := map[string]bool{}
	for _, fd := range def.Features {
		key := "features." + fd.Name
		if fd.Name == "" || seen[fd.Name] || !isFeatureName(fd.Name) {
			errs = append(errs, DefError{Key: key, Err: fmt.Errorf("features: name %q is empty, used twice or not lowercase letters, digits and _", fd.Name)})
			continue
		}
		seen[fd.Name] = true
		if _, err := ParseMeasure(MeasureDef{Name: fd.Name, Expr: fd.Measure}, s); err != nil {
			errs = append(errs, DefError{Key: key + ".measure", Err: err})
		}
		if fd.Over < 0 {
			errs = append(errs, DefError{Key: key + ".over", Err: fmt.Errorf("over: must be positive")})
		}
	}
	return errs
}

func isFeatureName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || i > 0 && isDigit(c)) {
			return false
		}
	}
	return true
}

// KeyOf returns the entity key of an event; ok is false when the event
// has no key (its features count nowhere).
func (e *Entity) KeyOf(ev *Event) (string, bool) {
	v := ev.Values[e.key]
	if v.Null() {
		return "", false
	}
	return v.String(), true
}

// FeatureSchema is what a rule's condition may read of the entity: each
// feature as features.<name>, with the type of its value.
func (e *Entity) FeatureSchema() CondSchema {
	s := CondSchema{}
	for i := range e.Features {
		s["features."+e.Features[i].Name] = e.Features[i].Measure.ResultType()
	}
	return s
}
