package config_test

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/braid-data/braid/logic/config"
)

// fieldAt returns the field of cfg at a dotted key (yaml names).
func fieldAt(t *testing.T, cfg *config.Config, key string) reflect.Value {
	t.Helper()
	v := reflect.ValueOf(cfg).Elem()
	for _, part := range strings.Split(key, ".") {
		found := false
		for i := 0; i < v.NumField(); i++ {
			if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name == part {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			t.Fatalf("%s: no such key", key)
		}
	}
	return v
}

// decodeAt reads value (as written in a YAML file) into a zero
// configuration at key and returns that field.
func decodeAt(t *testing.T, key, value string) reflect.Value {
	t.Helper()
	leaf := &yaml.Node{Kind: yaml.ScalarNode, Value: value}
	if value == `""` {
		leaf.Value, leaf.Style = "", yaml.DoubleQuotedStyle
	}
	node := leaf
	parts := strings.Split(key, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		node = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: parts[i]}, node}}
	}
	var cfg config.Config
	if err := node.Decode(&cfg); err != nil {
		t.Fatalf("%s: %q: %v", key, value, err)
	}
	return fieldAt(t, &cfg, key)
}

// scalarKeys lists the keys of every scalar field under v (the sections'
// fields and the top-level values), streams, views and auth aside.
func scalarKeys(v reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || name == "streams" || name == "views" || name == "auth" ||
			name == "alerts" || name == "entities" || name == "rules" { // named sections, listed as X.N rows
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, scalarKeys(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

// The README's table of keys gives every key's default; read as a YAML file
// would be, each is the value Default holds.
func TestREADMEListsTheDefaults(t *testing.T) {
	readme := string(repoFile(t, "README.md"))
	start := strings.Index(readme, "| key | default | meaning |")
	if start < 0 {
		t.Fatal("README has no table of keys")
	}
	readme = readme[start:]
	if end := strings.Index(readme, "\n\n"); end >= 0 {
		readme = readme[:end]
	}
	row := regexp.MustCompile("(?m)^\\| (`[a-z_.*]+`(?:, `[a-z_.*]+`)*) \\|([^|]*)\\|")
	tick := regexp.MustCompile("`([^`]*)`")
	paren := regexp.MustCompile(` \([^)]*\)`)
	def := config.Default()
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(readme, -1) {
		var keys []string
		for _, k := range tick.FindAllStringSubmatch(m[1], -1) {
			keys = append(keys, k[1])
		}
		vals := tick.FindStringSubmatch(m[2])
		for _, key := range keys {
			listed[key] = true
			if vals == nil {
				continue // no default (credentials, none)
			}
			if section, ok := strings.CutSuffix(key, ".*"); ok {
				for _, pair := range strings.Split(paren.ReplaceAllString(vals[1], ""), ", ") {
					k, v, ok := strings.Cut(pair, ": ")
					if !ok {
						t.Fatalf("%s: cannot read %q", key, pair)
					}
					listed[section+"."+k] = true
					checkDefault(t, "README", &def, section+"."+k, v)
				}
				continue
			}
			checkDefault(t, "README", &def, key, vals[1])
		}
	}
	for _, key := range scalarKeys(reflect.TypeOf(def), "") {
		if !listed[key] && key != "dlq.max_msgs" { // dlq.max_msgs no longer applies
			t.Errorf("README's table of keys does not list %s", key)
		}
	}
}

func checkDefault(t *testing.T, where string, def *config.Config, key, written string) {
	t.Helper()
	got, want := decodeAt(t, key, written), fieldAt(t, def, key)
	if !reflect.DeepEqual(got.Interface(), want.Interface()) {
		t.Errorf("%s: %s is %s (%v), Default has %v", where, key, written, got.Interface(), want.Interface())
	}
}

// A validation hint that quotes an example quotes the default: read as a
// YAML value, it is what Default holds.
func TestHintsQuoteTheDefaults(t *testing.T) {
	bad := [][2]string{ // key, a value it refuses
		{"epoch", "0s"},
		{"memory_limit", "5"},
		{"http.max_body_bytes", "5"},
		{"http.max_in_flight", "0"},
		{"http.read_timeout", "0s"},
		{"http.idle_timeout", "0s"},
		{"http.query_cache_bytes", "-1"},
		{"http.query_max_cells", "-1"},
		{"http.query_max_rows", "-1"},
		{"nats.dedup_window", "0s"},
		{"nats.publish_timeout", "0s"},
		{"batch.settle_timeout", "2h"},
		{"speed.batch_size", "0"},
		{"speed.max_wait", "0s"},
		{"speed.max_cells", "0"},
		{"archive.max_rows", "0"},
		{"archive.max_bytes", "5"},
		{"archive.max_delay", "0s"},
		{"archive.target_file_bytes", "5"},
		{"dlq.max_records", "-1"},
		{"dlq.max_late", "-1"},
	}
	eg := regexp.MustCompile(`e\.g\. ([^ ,;]+)`)
	def := config.Default()
	for _, kv := range bad {
		key, value := kv[0], kv[1]
		parts := strings.Split(key, ".")
		doc := fmt.Sprintf("%s: %s", parts[len(parts)-1], value)
		if len(parts) == 2 {
			doc = fmt.Sprintf("%s: { %s }", parts[0], doc)
		}
		_, err := config.Parse([]byte(doc), nil)
		var errs *config.Errors
		if !errors.As(err, &errs) {
			t.Fatalf("%s: %v", doc, err)
		}
		found := false
		for _, e := range errs.List {
			if e.Key != key {
				continue
			}
			found = true
			m := eg.FindStringSubmatch(e.Hint)
			if m == nil {
				t.Errorf("%s: the hint quotes no example: %s", key, e)
				continue
			}
			checkDefault(t, "hint "+e.String(), &def, key, m[1])
		}
		if !found {
			t.Errorf("%s: %s: no error at the key: %v", key, doc, err)
		}
	}
}

// The default of ingest_memory_bytes, 0, stands for four times
// max_body_bytes: the hint quotes that memory.
func TestIngestMemoryHintQuotesTheDefaultMemory(t *testing.T) {
	_, err := config.Parse([]byte("http: { ingest_memory_bytes: 1 }"), nil)
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatal(err)
	}
	def := config.Default()
	want := fmt.Sprintf("e.g. %d ", def.HTTP.IngestMemory())
	for _, e := range errs.List {
		if e.Key == "http.ingest_memory_bytes" {
			if !strings.HasPrefix(e.Hint, want) {
				t.Errorf("hint %q, want it to start with %q", e.Hint, want)
			}
			return
		}
	}
	t.Fatalf("no error at http.ingest_memory_bytes: %v", err)
}
