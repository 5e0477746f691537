package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/braid-data/braid/logic/config"
)

// TestPartitionsAndReplicas: streams.S.partitions, streams.S.partition_by
// and nats.replicas are checked like every key (the line, the key and a
// hint), settings that pick nothing are warned about, and good ones
// compile to the stream's partitions and partition field.
func TestPartitionsAndReplicas(t *testing.T) {
	const head = `nats:
  url: "nats://n1:4222,nats://n2:4222,nats://n3:4222"
  replicas: %REPLICAS%
streams:
  s:
    time: ts
    fields: { ts: time, id: string, user: string, email: string }
    id: id
    pii: { email: redact }
    partitions: %PARTS%
    partition_by: %BY%
views:
  v:
    stream: s
    window: 10s
    measures: { c: count() }
`
	yaml := func(replicas, parts, by string) string {
		return strings.NewReplacer("%REPLICAS%", replicas, "%PARTS%", parts, "%BY%", by).Replace(head)
	}
	for _, tc := range []struct {
		name, yaml string
		key        string // "": valid
		line       int
		msg, hint  string
	}{
		{"good", yaml("3", "8", "user"), "", 0, "", ""},
		{"negative partitions", yaml("3", "-1", "user"), "streams.s.partitions", 10, "want 1 to 1024", "can only grow"},
		{"too many partitions", yaml("3", "5000", "user"), "streams.s.partitions", 10, "want 1 to 1024", "1 (the default) to 1024"},
		{"undeclared partition_by", yaml("3", "8", "customer"), "streams.s.partition_by", 11, `partition_by field "customer" is not a declared field`, "a declared field"},
		{"redacted partition_by", yaml("3", "8", "email"), "streams.s.partition_by", 11, "every event would go to one partition", "pii: hash"},
		{"six replicas", yaml("6", "8", "user"), "nats.replicas", 3, "must be in 1..5", "3 for a cluster"},
		{"replicas on the embedded server", strings.Replace(yaml("3", "8", "user"), `"nats://n1:4222,nats://n2:4222,nats://n3:4222"`, `""`, 1),
			"nats.replicas", 3, "must be 1 without nats.url", "set nats.url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.yaml), nil)
			if tc.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				cat, err := cfg.Compile([]byte("k"))
				if err != nil {
					t.Fatal(err)
				}
				s := cat.Streams["s"]
				if s.Partitions != 8 || s.PartitionField < 0 || s.Fields[s.PartitionField].Name != "user" {
					t.Fatalf("compiled: %d partitions, field %d", s.Partitions, s.PartitionField)
				}
				if ws := cfg.Warnings(); len(ws) > 0 {
					t.Fatalf("warnings: %q", ws)
				}
				return
			}
			var errs *config.Errors
			if !errors.As(err, &errs) || len(errs.List) != 1 {
				t.Fatalf("want one error at %s, got %v", tc.key, err)
			}
			e := errs.List[0]
			if e.Key != tc.key || e.Line != tc.line || !strings.Contains(e.Msg, tc.msg) || !strings.Contains(e.Hint, tc.hint) {
				t.Fatalf("got %s (hint %q); want line %d %s: %s (hint ~%q)", e.String(), e.Hint, tc.line, tc.key, tc.msg, tc.hint)
			}
		})
	}
	for _, tc := range []struct {
		name, yaml, warn string
	}{
		{"partition_by with one partition", yaml("3", "1", "user"), "streams.s.partition_by is set but the stream has one partition"},
		{"two replicas", yaml("2", "8", "user"), "nats.replicas is 2"},
	} {
		cfg, err := config.Parse([]byte(tc.yaml), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ws := cfg.Warnings(); len(ws) != 1 || !strings.Contains(ws[0], tc.warn) {
			t.Errorf("%s: warnings %q, want one saying %q", tc.name, ws, tc.warn)
		}
	}
}
