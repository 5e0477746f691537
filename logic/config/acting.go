package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/braid-data/braid/logic"
)

// AlertConfig is one alert as written in the file.
type AlertConfig struct {
	View   string      `yaml:"view"`
	When   string      `yaml:"when"`
	On     string      `yaml:"on"` // speed (default) | final
	Action AlertAction `yaml:"action"`
}

// AlertAction is where an alert's deliveries go: a webhook or a subject.
type AlertAction struct {
	Webhook   string   `yaml:"webhook"`
	NATS      string   `yaml:"nats"`
	SecretEnv string   `yaml:"secret_env"` // the variable holding the webhook's HMAC key
	Attempts  int      `yaml:"attempts"`   // deliveries attempted before the dead-letter queue (0: defaults.AlertAttempts)
	Backoff   Duration `yaml:"backoff"`    // the first retry's delay, doubled per attempt (0: defaults.AlertBackoff)
	Timeout   Duration `yaml:"timeout"`    // one attempt's bound (0: defaults.AlertTimeout)
}

// EntityConfig is one entity as written in the file.
type EntityConfig struct {
	Stream   string   `yaml:"stream"`
	Key      string   `yaml:"key"`
	Features Features `yaml:"features"`
}

// FeatureConfig is one feature of an entity.
type FeatureConfig struct {
	Measure string   `yaml:"measure"`
	Over    Duration `yaml:"over"`
}

// Features keeps an entity's features in file order.
type Features []NamedFeature

// NamedFeature is a feature with its name.
type NamedFeature struct {
	Name string
	FeatureConfig
}

// UnmarshalYAML keeps the order of the features; a feature with a value
// of the wrong type is kept with what could be read.
func (f *Features) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return typeError(n.Line, "features: want a mapping of feature names")
	}
	var terr yaml.TypeError
	for i := 0; i+1 < len(n.Content); i += 2 {
		var fc FeatureConfig
		if err := n.Content[i+1].Decode(&fc); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return err
			}
			terr.Errors = append(terr.Errors, te.Errors...)
		}
		*f = append(*f, NamedFeature{Name: n.Content[i].Value, FeatureConfig: fc})
	}
	if len(terr.Errors) > 0 {
		return &terr
	}
	return nil
}

// RuleConfig is one decision rule as written in the file.
type RuleConfig struct {
	Stream  string `yaml:"stream"`
	Entity  string `yaml:"entity"`
	When    string `yaml:"when"`
	Outcome string `yaml:"outcome"` // allow | review | block
}

func alertDef(ac AlertConfig) logic.AlertDef {
	return logic.AlertDef{View: ac.View, When: ac.When, On: ac.On, Webhook: ac.Action.Webhook, NATS: ac.Action.NATS, SecretEnv: ac.Action.SecretEnv,
		Attempts: ac.Action.Attempts, Backoff: ac.Action.Backoff.D(), Timeout: ac.Action.Timeout.D()}
}

func entityDef(ec EntityConfig) logic.EntityDef {
	def := logic.EntityDef{Stream: ec.Stream, Key: ec.Key}
	for _, f := range ec.Features {
		def.Features = append(def.Features, logic.FeatureDef{Name: f.Name, Measure: f.Measure, Over: f.Over.D()})
	}
	return def
}

func ruleDef(rc RuleConfig) logic.RuleDef {
	return logic.RuleDef{Stream: rc.Stream, Entity: rc.Entity, When: rc.When, Outcome: rc.Outcome}
}

// checkActingNodes checks the nodes of the types of this file that
// checkNodes cannot walk by reflection; ok is false for other types.
func checkActingNodes(n *yaml.Node, t reflect.Type, path string) ([]Error, bool) {
	if t == reflect.TypeOf(Features{}) && n.Kind == yaml.MappingNode {
		var out []Error
		for i := 0; i+1 < len(n.Content); i += 2 {
			out = append(out, checkNodes(n.Content[i+1], reflect.TypeOf(FeatureConfig{}), join(path, n.Content[i].Value))...)
		}
		return out, true
	}
	return nil, false
}

// validateActing checks alerts, entities and rules against the checked
// streams and the views.
func (c *Config) validateActing(checked map[string][]*logic.Stream) issues {
	var is issues
	entities := map[string][]*logic.Entity{}
	for _, name := range sortedKeys(c.Entities) {
		key := "entities." + name
		ec := c.Entities[name]
		streams, ok := c.definedOver(&is, key, "entity", name, ec.Stream, checked)
		if !ok {
			continue
		}
		var sets [][]logic.DefError
		for _, s := range streams {
			sets = append(sets, logic.CheckEntity(name, entityDef(ec), s))
			if e, err := logic.NewEntity(name, entityDef(ec), s); err == nil {
				entities[name] = append(entities[name], e)
			}
		}
		is.addEvery(key, sets)
	}
	for _, name := range sortedKeys(c.Alerts) {
		key := "alerts." + name
		ac := c.Alerts[name]
		if !nameRe.MatchString(name) {
			is.add(key, "lowercase letters, digits and _", "bad alert name")
			continue
		}
		vc, ok := c.Views.ByName[ac.View]
		if !ok {
			is.add(key+".view", "one of the views", "unknown view %q", ac.View)
			continue
		}
		var sets [][]logic.DefError
		for _, s := range checked[vc.Stream] {
			v, err := logic.NewView(ac.View, viewDef(vc), s)
			if err != nil {
				continue
			}
			sets = append(sets, logic.CheckAlert(name, alertDef(ac), v))
		}
		is.addEvery(key, sets)
		if subj := ac.Action.NATS; subj != "" && (subj == c.Namespace || strings.HasPrefix(subj, c.Namespace+".")) {
			is.add(key+".action.nats", "a subject outside "+c.Namespace+".>", "action.nats: %q is among Braid's own subjects (namespace %s)", subj, c.Namespace)
		}
	}
	for _, name := range sortedKeys(c.Rules) {
		key := "rules." + name
		rc := c.Rules[name]
		streams, ok := c.definedOver(&is, key, "rule", name, rc.Stream, checked)
		if !ok {
			continue
		}
		if rc.Entity != "" {
			if _, declared := c.Entities[rc.Entity]; !declared {
				is.add(key+".entity", "one of the entities", "unknown entity %q", rc.Entity)
				continue
			}
		}
		var sets [][]logic.DefError
		for i, s := range streams {
			var e *logic.Entity
			if rc.Entity != "" {
				es := entities[rc.Entity]
				if i >= len(es) {
					continue // the entity has errors of its own
				}
				e = es[i]
			}
			sets = append(sets, logic.CheckRule(name, ruleDef(rc), s, e))
		}
		is.addEvery(key, sets)
	}
	return is
}

// compileActing adds the entities, alerts and rules to a catalog whose
// streams and views are compiled.
func (c *Config) compileActing(cat *Catalog) error {
	cat.Entities, cat.Alerts = map[string]*logic.Entity{}, map[string]*logic.Alert{}
	cat.Rules = map[string][]*logic.Rule{}
	for _, name := range sortedKeys(c.Entities) {
		ec := c.Entities[name]
		e, err := logic.NewEntity(name, entityDef(ec), cat.Streams[ec.Stream])
		if err != nil {
			return fmt.Errorf("entity %s: %w", name, err)
		}
		cat.Entities[name] = e
	}
	for _, name := range sortedKeys(c.Alerts) {
		ac := c.Alerts[name]
		a, err := logic.NewAlert(name, alertDef(ac), cat.Views[ac.View])
		if err != nil {
			return fmt.Errorf("alert %s: %w", name, err)
		}
		cat.Alerts[name] = a
		cat.AlertOrder = append(cat.AlertOrder, name)
	}
	for _, name := range sortedKeys(c.Rules) {
		rc := c.Rules[name]
		r, err := logic.NewRule(name, ruleDef(rc), cat.Streams[rc.Stream], cat.Entities[rc.Entity])
		if err != nil {
			return fmt.Errorf("rule %s: %w", name, err)
		}
		cat.Rules[rc.Stream] = append(cat.Rules[rc.Stream], r)
	}
	return nil
}
