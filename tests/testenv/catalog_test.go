package testenv

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
)

// entries splits "key: value" entries into a map.
func entries(t *testing.T, list []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range list {
		k, v, ok := strings.Cut(e, ":")
		if !ok {
			t.Fatalf("entry %q is not key: value", e)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkParsed parses the catalog's YAML with the config package and checks
// that every stream and view reads back as the catalog declares it.
func checkParsed(t *testing.T, name string, c Catalog) *config.Config {
	t.Helper()
	y := c.YAML()
	cfg, err := config.Parse([]byte(y), nil)
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, y)
	}
	if c.Epoch != "" && cfg.Epoch.D() != duration(t, c.Epoch) {
		t.Errorf("%s: epoch %v, want %s", name, cfg.Epoch.D(), c.Epoch)
	}
	if len(cfg.Streams) != len(c.Streams) {
		t.Errorf("%s: %d streams, want %d", name, len(cfg.Streams), len(c.Streams))
	}
	for _, s := range c.Streams {
		got, ok := cfg.Streams[s.Name]
		if !ok {
			t.Errorf("%s: no stream %s", name, s.Name)
			continue
		}
		fields := entries(t, s.Fields)
		if got.Time != s.Time || got.ID != s.ID || got.AllowedLateness.D() != duration(t, s.Lateness) || got.MaxFuture.D() != duration(t, s.MaxFuture) {
			t.Errorf("%s: stream %s reads as %+v, declared %+v", name, s.Name, got, s)
		}
		if len(got.Fields) != len(fields) || len(got.PII) != len(s.PII) || !slices.Equal(got.Required, s.Required) {
			t.Errorf("%s: stream %s: fields %v, required %v, pii %v; declared %v, %v, %v", name, s.Name, got.Fields, got.Required, got.PII, s.Fields, s.Required, s.PII)
		}
		for k, v := range fields {
			if got.Fields[k] != v {
				t.Errorf("%s: stream %s: field %s is %q, declared %q", name, s.Name, k, got.Fields[k], v)
			}
		}
		for k, v := range entries(t, s.PII) {
			if got.PII[k] != v {
				t.Errorf("%s: stream %s: pii %s is %q, declared %q", name, s.Name, k, got.PII[k], v)
			}
		}
	}
	var names []string
	for _, v := range c.Views {
		names = append(names, v.Name)
	}
	if !slices.Equal(cfg.Views.Names, names) {
		t.Errorf("%s: views %v, declared %v", name, cfg.Views.Names, names)
	}
	for _, v := range c.Views {
		got := cfg.Views.ByName[v.Name]
		if got.Stream != v.Stream || got.Window.D() != duration(t, v.Window) || got.Hop.D() != duration(t, v.Hop) || got.Where != v.Where ||
			!slices.Equal(got.GroupBy, v.GroupBy) || (got.GroupBy == nil) != (v.GroupBy == nil) {
			t.Errorf("%s: view %s reads as %+v, declared %+v", name, v.Name, got, v)
		}
		var measures []string
		for _, m := range got.Measures {
			measures = append(measures, m.Name+": "+m.Expr)
		}
		if !slices.Equal(measures, v.Measures) {
			t.Errorf("%s: view %s: measures %v, declared %v", name, v.Name, measures, v.Measures)
		}
	}
	return cfg
}

// TestCatalogYAML: the standard catalogs and variations of them render as
// YAML that the config package reads back as declared, in order (measures
// with commas in them included).
func TestCatalogYAML(t *testing.T) {
	checkParsed(t, "E2E", E2E())
	clicks := Fast()
	clicks.Streams = []Stream{Clicks()}
	clicks.Views = []View{ClicksByPage()}
	checkParsed(t, "clicks", clicks)

	v := E2E()
	v.Stream("orders").Lateness = "1m"
	v.Stream("orders").MaxFuture = "5m"
	v.Streams = append(v.Streams, Clicks().Without("ms").With("ref: string"))
	hop := OrdersByCountry().Without("items", "basket_avg")
	hop.Name, hop.Window, hop.Hop, hop.Where = "hopping", "1h", "1m", "amount > 0"
	all := View{Name: "all", Stream: "clicks", Window: "5m", GroupBy: []string{}, Measures: []string{"n: count()"}}
	v.Views = append(v.Views, hop, all)
	v.Extra = "dlq: { max_records: 7 }\n"
	cfg := checkParsed(t, "variations", v)
	if cfg.DLQ.MaxRecords != 7 || cfg.Batch.Every.D() != 0 || cfg.Archive.MaxRows != 1000 || cfg.Speed.BatchSize != 500 {
		t.Errorf("settings: dlq %+v, batch %+v, archive %+v, speed %+v", cfg.DLQ, cfg.Batch, cfg.Archive, cfg.Speed)
	}
	if cfg.Streams["orders"].AllowedLateness.D() != time.Minute {
		t.Errorf("the changed lateness did not reach the config: %v", cfg.Streams["orders"].AllowedLateness.D())
	}
}

// TestCatalogValues: the changes of a catalog's parts leave the standard
// ones as they were (no slice is shared), and Without takes a field out of
// the fields, required fields and PII modes alike.
func TestCatalogValues(t *testing.T) {
	o := Orders()
	w := o.Without("email", "amount")
	for _, f := range append(append(slices.Clone(w.Fields), w.Required...), w.PII...) {
		if strings.HasPrefix(f, "email") || strings.HasPrefix(f, "amount") {
			t.Errorf("Without left %q in %+v", f, w)
		}
	}
	if len(w.Fields) != len(o.Fields)-2 || len(w.Required) != len(o.Required)-1 || len(w.PII) != len(o.PII)-1 {
		t.Errorf("Without(email, amount) of %+v: %+v", o, w)
	}
	a, b := o.With("x: int"), o.With("y: int")
	if a.Fields[len(a.Fields)-1] != "x: int" || b.Fields[len(b.Fields)-1] != "y: int" {
		t.Errorf("With shares its fields: %v, %v", a.Fields, b.Fields)
	}
	if !slices.Equal(o.Fields, Orders().Fields) || !slices.Equal(o.Required, Orders().Required) || !slices.Equal(o.PII, Orders().PII) {
		t.Errorf("Without or With changed the stream they were called on: %+v", o)
	}
	v := OrdersByCountry()
	if got := v.Without("revenue").Measures; len(got) != len(v.Measures)-1 || slices.Contains(got, "revenue: sum(amount)") {
		t.Errorf("View.Without(revenue): %v", got)
	}
	if !slices.Equal(v.Measures, OrdersByCountry().Measures) {
		t.Errorf("View.Without changed the view: %v", v.Measures)
	}
	c := E2E()
	c.Stream("orders").Lateness = "9m"
	c.View("buyers_hourly").Window = "2h"
	if c.Streams[0].Lateness != "9m" || c.Views[1].Window != "2h" || E2E().Streams[0].Lateness == "9m" {
		t.Errorf("Stream/View do not change the catalog in place: %+v", c)
	}
	defer func() {
		if recover() == nil {
			t.Errorf("Stream of an unknown name did not panic")
		}
	}()
	c.Stream("nope")
}
