package main

import (
	"strings"
	"testing"

	"github.com/braid-data/braid/logic/config"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:s3cret@h:6379/0":                "redis://:xxxxx@h:6379/0",
		"rediss://braid:s3cret@h:6380/0":          "rediss://braid:xxxxx@h:6380/0",
		"redis://h:6379/0":                        "redis://h:6379/0",
		"nats://a:p1@n1:4222,nats://b:p2@n2:4222": "nats://a:xxxxx@n1:4222,nats://b:xxxxx@n2:4222",
	} {
		got := redactURL(in)
		if got != want || strings.Contains(got, "s3cret") {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPIIKeyWarning: braid check warns, naming the variable and the
// streams, when a stream has PII fields and the variable is unset, and
// says nothing when it is set or when no stream has PII fields.
func TestPIIKeyWarning(t *testing.T) {
	parse := func(mode string) *config.Config {
		t.Helper()
		cfg, err := config.Parse([]byte(`
data_dir: `+t.TempDir()+`
pii_key_env: SHOP_PII
streams:
  users:
    time: ts
    fields: { ts: time, email: string }
    pii: { email: `+mode+` }
views:
  v:
    stream: users
    window: 10s
    measures: { c: count() }
`), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	unset := func(string) string { return "" }
	w := piiKeyWarning(parse("hash"), unset)
	for _, want := range []string{"users", "SHOP_PII", "serve"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q does not say %q", w, want)
		}
	}
	if w := piiKeyWarning(parse("hash"), func(k string) string { return map[string]string{"SHOP_PII": "k"}[k] }); w != "" {
		t.Errorf("with the variable: %q", w)
	}
	if w := piiKeyWarning(parse("mask"), unset); !strings.Contains(w, "users") {
		t.Errorf("masked PII (dead letters are named by a keyed digest of the raw event): %q", w)
	}
	noPII := parse("hash")
	noPII.Streams["users"] = func(sc config.StreamConfig) config.StreamConfig { sc.PII = nil; return sc }(noPII.Streams["users"])
	if w := piiKeyWarning(noPII, unset); w != "" {
		t.Errorf("no PII fields: %q", w)
	}
}
