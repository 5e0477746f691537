package logic

import (
	"fmt"
	"strings"
)

// Outcome is a decision about an event at ingest. Outcomes are ordered by
// severity: an event matched by several rules takes the most severe.
type Outcome uint8

// Outcomes.
const (
	Allow Outcome = iota
	Review
	Block
)

func (o Outcome) String() string {
	switch o {
	case Review:
		return "review"
	case Block:
		return "block"
	}
	return "allow"
}

// ParseOutcome reads allow, review or block.
func ParseOutcome(s string) (Outcome, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "review":
		return Review, nil
	case "block":
		return Block, nil
	}
	return 0, fmt.Errorf("outcome: %q is not allow, review or block", s)
}

// RuleDef is a rule as the configuration declares it.
type RuleDef struct {
	Stream  string
	Entity  string // optional: the entity whose features the rule reads
	When    string
	Outcome string
}

// Rule is a compiled rule: a condition over an event's fields and,
// with an entity, its features (features.<name>).
type Rule struct {
	Name    string
	Stream  *Stream
	Entity  *Entity // nil: the rule reads the event alone
	When    *Cond
	Outcome Outcome
}

// RuleSchema is what a rule's condition may read: the stream's fields and
// the entity's features.
func RuleSchema(s *Stream, e *Entity) CondSchema {
	sc := CondSchema{}
	for _, f := range s.Fields {
		sc[f.Name] = f.Type
	}
	if e != nil {
		for k, t := range e.FeatureSchema() {
			sc[k] = t
		}
	}
	return sc
}

// NewRule compiles a rule; e is nil for a rule without an entity.
func NewRule(name string, def RuleDef, s *Stream, e *Entity) (*Rule, error) {
	errs := CheckRule(name, def, s, e)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	r := &Rule{Name: name, Stream: s, Entity: e}
	r.Outcome, _ = ParseOutcome(def.Outcome)
	r.When, _ = ParseCond(def.When, RuleSchema(s, e))
	return r, nil
}

// CheckRule lists every mistake of a rule definition, each with its key
// under the rule.
func CheckRule(name string, def RuleDef, s *Stream, e *Entity) []DefError {
	var errs []DefError
	if e != nil && e.Stream.Name != s.Name {
		errs = append(errs, DefError{Key: "entity", Err: fmt.Errorf("entity: %s is over stream %s, not %s", e.Name, e.Stream.Name, s.Name)})
	}
	if strings.TrimSpace(def.When) == "" {
		errs = append(errs, DefError{Key: "when", Err: fmt.Errorf("when: a rule needs a condition")})
	} else if _, err := ParseCond(def.When, RuleSchema(s, e)); err != nil {
		errs = append(errs, DefError{Key: "when", Err: err})
	}
	if _, err := ParseOutcome(def.Outcome); err != nil {
		errs = append(errs, DefError{Key: "outcome", Err: err})
	}
	return errs
}

// get answers the names a rule reads: the event's fields, then features.
func (r *Rule) get(ev *Event, features func(name string) Value) func(string) Value {
	return func(n string) Value {
		if strings.HasPrefix(n, "features.") && r.Entity != nil {
			if features == nil {
				return Value{}
			}
			return features(n[len("features."):])
		}
		if i := r.Stream.FieldIndex(n); i >= 0 {
			return ev.Values[i]
		}
		return Value{}
	}
}

// Match reports whether the rule's condition holds for an event; features
// answers the event's entity features by name (nil: all null).
func (r *Rule) Match(ev *Event, features func(name string) Value) bool {
	return r.When.Eval(r.get(ev, features))
}

// Decide evaluates rules against an event: the outcome is the most severe
// of the rules that matched (Allow when none did), and matched names them
// in the order given. features answers by entity name and feature name.
func Decide(rules []*Rule, ev *Event, features func(entity, name string) Value) (Outcome, []string) {
	out := Allow
	var matched []string
	for _, r := range rules {
		var f func(string) Value
		if r.Entity != nil && features != nil {
			ent := r.Entity.Name
			f = func(n string) Value { return features(ent, n) }
		}
		if r.Match(ev, f) {
			matched = append(matched, r.Name)
			out = max(out, r.Outcome)
		}
	}
	return out, matched
}
