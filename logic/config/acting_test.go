package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
)

const actingDoc = `
streams:
  orders:
    time: ts
    id: order_id
    fields: { ts: time, order_id: string, customer_id: string, country: string, amount: float }
  sensors:
    time: ts
    fields: { ts: time, sensor: string, temp: float }
views:
  sensor_temps:
    stream: sensors
    window: 1m
    group_by: [sensor]
    measures: { max_temp: max(temp), readings: count() }
  orders_by_country:
    stream: orders
    window: 1m
    group_by: [country]
    tier: batch
    measures: { orders: count() }
alerts:
  overheat:
    view: sensor_temps
    when: "max_temp > 80"
    on: speed
    action: { webhook: "http://127.0.0.1:9/hook", secret_env: BRAID_HOOK_SECRET }
entities:
  customer:
    stream: orders
    key: customer_id
    features:
      orders_1h:      { measure: "count()", over: 1h }
      avg_basket_30d: { measure: "avg(amount)", over: 30d }
      last_country:   { measure: "last(country)" }
rules:
  new_country_big_basket:
    stream: orders
    entity: customer
    when: "amount > 5 * features.avg_basket_30d and country != features.last_country"
    outcome: block
`

func TestActingSections(t *testing.T) {
	cfg, err := config.Parse([]byte(actingDoc), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := cat.Alerts["overheat"]; a == nil || a.On != logic.OnSpeed || a.View.Name != "sensor_temps" || a.SecretEnv != "BRAID_HOOK_SECRET" {
		t.Fatalf("alert: %+v", a)
	}
	cfg, err = config.Parse([]byte(strings.Replace(actingDoc, `secret_env: BRAID_HOOK_SECRET }`, `secret_env: BRAID_HOOK_SECRET, attempts: 3, backoff: 250ms, timeout: 2s }`, 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cat, err = cfg.Compile(nil); err != nil {
		t.Fatal(err)
	}
	if a := cat.Alerts["overheat"]; a.Attempts != 3 || a.Backoff != 250*time.Millisecond || a.Timeout != 2*time.Second {
		t.Fatalf("alert's delivery settings: %+v", a)
	}
	e := cat.Entities["customer"]
	if e == nil || len(e.Features) != 3 || e.Features[0].Name != "orders_1h" || e.Features[1].Over.Hours() != 720 ||
		e.Features[2].Measure.ResultType() != logic.TypeString {
		t.Fatalf("entity: %+v", e)
	}
	rules := cat.Rules["orders"]
	if len(rules) != 1 || rules[0].Outcome != logic.Block || rules[0].Entity != e {
		t.Fatalf("rules: %+v", rules)
	}
	if cat.Views["orders_by_country"].Tier != logic.TierBatch || cat.Views["sensor_temps"].Tier != logic.TierLive {
		t.Fatal("tiers")
	}
}

func TestActingErrors(t *testing.T) {
	for _, c := range []struct{ from, to, key, msg string }{
		{`when: "max_temp > 80"`, `when: "max_tmp > 80"`, "alerts.overheat.when", `unknown name "max_tmp"`},
		{`view: sensor_temps`, `view: nope`, "alerts.overheat.view", "unknown view"},
		{`on: speed`, `on: soon`, "alerts.overheat.on", "not speed or final"},
		{`webhook: "http://127.0.0.1:9/hook"`, `webhook: "ftp://x"`, "alerts.overheat.action.webhook", "not an http(s) URL"},
		{`webhook: "http://127.0.0.1:9/hook", secret_env: BRAID_HOOK_SECRET }`, `nats: "braid.alerts.out.overheat" }`, "alerts.overheat.action.nats", "among Braid's own subjects"},
		{`secret_env: BRAID_HOOK_SECRET }`, `secret_env: BRAID_HOOK_SECRET, attempts: many }`, "alerts.overheat.action.attempts", "int"},
		{`secret_env: BRAID_HOOK_SECRET }`, `secret_env: BRAID_HOOK_SECRET, attempts: 1000 }`, "alerts.overheat.action.attempts", "not between 1 and 100"},
		{`secret_env: BRAID_HOOK_SECRET }`, `secret_env: BRAID_HOOK_SECRET, backoff: 1ms }`, "alerts.overheat.action.backoff", "not between 10ms"},
		{`secret_env: BRAID_HOOK_SECRET }`, `secret_env: BRAID_HOOK_SECRET, timeout: soon }`, "alerts.overheat.action.timeout", "duration"},
		{`key: customer_id`, `key: client`, "entities.customer.key", "not declared"},
		{`"last(country)"`, `"last(colour)"`, "entities.customer.features.last_country.measure", "not declared"},
		{`entity: customer`, `entity: shopper`, "rules.new_country_big_basket.entity", "unknown entity"},
		{`outcome: block`, `outcome: deny`, "rules.new_country_big_basket.outcome", "not allow, review or block"},
		{`5 * features.avg_basket_30d`, `5 * features.avg`, "rules.new_country_big_basket.when", `unknown name "features.avg"`},
		{`tier: batch`, `tier: hot`, "views.orders_by_country.tier", "not live or batch"},
		{"    stream: orders\n    key: customer_id", "    stream: shop\n    key: customer_id", "entities.customer.stream", `unknown stream "shop"`},
		{"    stream: orders\n    entity: customer", "    stream: till\n    entity: customer", "rules.new_country_big_basket.stream", `unknown stream "till"`},
		{"  new_country_big_basket:", "  New-Rule:", "rules.New-Rule", "bad rule name"},
		{"  customer:", "  Customer:", "entities.Customer", "bad entity name"},
		{"  overheat:", "  Over heat:", "alerts.Over heat", "bad alert name"},
	} {
		doc := strings.Replace(actingDoc, c.from, c.to, 1)
		_, err := config.Parse([]byte(doc), nil)
		var errs *config.Errors
		if !errors.As(err, &errs) {
			t.Fatalf("%s: got %v, want config errors", c.to, err)
		}
		found := false
		for _, e := range errs.List {
			if e.Key == c.key && strings.Contains(e.Msg, c.msg) && e.Line > 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: want an error at %s with %q, got %v", c.to, c.key, c.msg, err)
		}
	}
}
