package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
)

// oneError checks that doc (before the minimal file) with the variables
// vars is valid (key "") or has exactly one error, at key, whose message
// holds msg and whose hint holds hint.
func oneError(t *testing.T, doc string, vars map[string]string, key, msg, hint string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc+"\n"+minimal), env(vars))
	if key == "" {
		if err != nil {
			t.Errorf("%q %v: %v", doc, vars, err)
		}
		return cfg
	}
	var errs *config.Errors
	if !errors.As(err, &errs) || len(errs.List) != 1 {
		t.Errorf("%q %v: got %v, want one error at %s", doc, vars, err, key)
		return nil
	}
	if e := errs.List[0]; e.Key != key || !strings.Contains(e.Msg, msg) || !strings.Contains(e.Hint, hint) {
		t.Errorf("%q %v: got %s, want %s: ...%s... (hint: ...%s...)", doc, vars, e, key, msg, hint)
	}
	return nil
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"134217728", 128 << 20}, {"128MiB", 128 << 20}, {"64 MiB", 64 << 20}, {"1GiB", 1 << 30},
		{"1GB", 1_000_000_000}, {"500MB", 500_000_000}, {"3KB", 3000}, {"2KiB", 2048}, {"512B", 512}, {"1TiB", 1 << 40},
	} {
		got, err := config.ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5GB", "12 parsecs", "MiB", "1mib", "99999999999TiB"} {
		if got, err := config.ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestArchiveUpkeepKeys(t *testing.T) {
	cfg := oneError(t, "archive: { compact: false, target_file_bytes: 64MiB }", nil, "", "", "")
	if cfg != nil && (cfg.Archive.Compact || cfg.Archive.TargetFileBytes != 64<<20) {
		t.Errorf("archive: %+v", cfg.Archive)
	}
	cfg = oneError(t, "archive: { target_file_bytes: 1073741824 }", map[string]string{"BRAID_ARCHIVE_TARGET_FILE_BYTES": "256MiB", "BRAID_ARCHIVE_COMPACT": "false"}, "", "", "")
	if cfg != nil && (cfg.Archive.Compact || cfg.Archive.TargetFileBytes != 256<<20) {
		t.Errorf("environment overrides: %+v", cfg.Archive)
	}
	oneError(t, "archive: { target_file_bytes: 1000KB }", nil, "archive.target_file_bytes", "at least 1048576 (1 MiB)", "e.g. 134217728 (128 MiB)")
	oneError(t, "archive: { target_file_bytes: lots }", nil, "archive.target_file_bytes", `bad size "lots"`, "64MiB")
	oneError(t, "", map[string]string{"BRAID_ARCHIVE_TARGET_FILE_BYTES": "1.5GB"}, "BRAID_ARCHIVE_TARGET_FILE_BYTES", "bad size", "environment override")
}

func TestStorageSection(t *testing.T) {
	cases := []struct {
		doc  string
		vars map[string]string
		key  string // "" when valid
		msg  string
		hint string
	}{
		{"", nil, "", "", ""},
		{`storage: { url: "s3://braid-lake/prod", endpoint: "http://127.0.0.1:9000", region: us-east-1, path_style: true }`, nil, "", "", ""},
		{`storage: { url: "s3://braid-lake" }`, nil, "", "", ""},            // AWS S3, whole bucket
		{`storage: { url: "s3://braid-lake/a/b/" }`, nil, "", "", ""},       // a deeper prefix
		{`storage: { endpoint: "http://127.0.0.1:9000" }`, nil, "", "", ""}, // files under data_dir (warned)
		{`storage: { url: "s3://braid-lake", access_key_env: MY_KEY, secret_key_env: MY_SECRET }`, nil, "", "", ""},
		{`storage: { url: "gs://braid-lake/prod" }`, nil, "storage.url", "only s3:// is known", `s3://bucket/prefix`},
		{`storage: { url: "/srv/lake" }`, nil, "storage.url", "only s3:// is known", `"" for files under data_dir`},
		{`storage: { url: "s3:///prod" }`, nil, "storage.url", `bad bucket ""`, "3 to 63 lowercase"},
		{`storage: { url: "s3://Braid_Lake/prod" }`, nil, "storage.url", `bad bucket "Braid_Lake"`, ""},
		{`storage: { url: "s3://braid-lake:9000/prod" }`, nil, "storage.url", "bad bucket", ""},
		{`storage: { url: "s3://braid-lake/prod?x=1" }`, nil, "storage.url", "only a bucket and a prefix", "endpoint"},
		{`storage: { url: "s3://braid-lake/a//b" }`, nil, "storage.url", `bad prefix "a//b"`, ""},
		{`storage: { url: "s3://braid-lake/a/../b" }`, nil, "storage.url", "bad prefix", ""},
		{`storage: { url: "s3://braid-lake", endpoint: "127.0.0.1:9000" }`, nil, "storage.endpoint", "http:// or https://", `"" for AWS S3`},
		{`storage: { url: "s3://braid-lake", endpoint: "ftp://h" }`, nil, "storage.endpoint", "http:// or https://", ""},
		{`storage: { url: "s3://braid-lake", endpoint: "http://h:9000/bucket" }`, nil, "storage.endpoint", "no path", ""},
		{`storage: { url: "s3://braid-lake", access_key_env: "MY KEY" }`, nil, "storage.access_key_env", `bad variable name "MY KEY"`, "BRAID_S3_ACCESS_KEY"},
		{`storage: { url: "s3://braid-lake", secret_key_env: "" }`, nil, "storage.secret_key_env", `bad variable name ""`, "BRAID_S3_SECRET_KEY"},
		{"", map[string]string{"BRAID_STORAGE_URL": "s3://from-env/p", "BRAID_STORAGE_ENDPOINT": "https://s3.example.com"}, "", "", ""},
		{"", map[string]string{"BRAID_STORAGE_URL": "http://nope"}, "storage.url", "only s3://", ""},
	}
	for _, c := range cases {
		oneError(t, c.doc, c.vars, c.key, c.msg, c.hint)
	}

	cfg := oneError(t, "", map[string]string{"BRAID_STORAGE_URL": "s3://from-env/p", "BRAID_STORAGE_PATH_STYLE": "true", "BRAID_STORAGE_REGION": "eu-west-1"}, "", "", "")
	if cfg == nil || cfg.Storage.URL != "s3://from-env/p" || !cfg.Storage.PathStyle || !cfg.Storage.IsS3() {
		t.Fatalf("storage from the environment: %+v", cfg)
	}
	if got := cfg.Storage.S3Endpoint(); got != "https://s3.eu-west-1.amazonaws.com" {
		t.Errorf("endpoint of AWS in a region: %s", got)
	}
	if got := (config.Storage{URL: "s3://b"}).S3Endpoint(); got != "https://s3.amazonaws.com" {
		t.Errorf("endpoint of AWS: %s", got)
	}
	if got := (config.Storage{URL: "s3://b", Endpoint: "http://h:1", Region: "r"}).S3Endpoint(); got != "http://h:1" {
		t.Errorf("endpoint given: %s", got)
	}

	// Object-store settings without a URL are kept, and warned about.
	cfg = oneError(t, `storage: { endpoint: "http://127.0.0.1:9000" }`, nil, "", "", "")
	if ws := cfg.Warnings(); len(ws) != 1 || !strings.Contains(ws[0], "storage.url is empty") {
		t.Errorf("warnings %q", ws)
	}
	cfg = oneError(t, `storage: { url: "s3://b1b", endpoint: "http://127.0.0.1:9000" }`, nil, "", "", "")
	if ws := cfg.Warnings(); len(ws) != 0 {
		t.Errorf("warnings %q", ws)
	}
}

func TestStreamRetention(t *testing.T) {
	stream := func(extra string) string {
		return "streams:\n  s:\n    time: ts\n    fields: { ts: time, n: int }\n" + extra +
			"views:\n  v:\n    stream: s\n    window: 10s\n    measures: { c: count() }\n"
	}
	for _, c := range []struct {
		extra, msg, hint string // msg "": valid
		want             time.Duration
	}{
		{"", "", "", 0},
		{"    retention: 400d\n", "", "", 400 * 24 * time.Hour},
		{"    retention: 24h\n", "", "", 24 * time.Hour},
		{"    retention: 0\n", "", "", 0},
		{"    retention: 3d\n    allowed_lateness: 3d\n", "", "", 3 * 24 * time.Hour},
		{"    retention: 23h\n", "at least 1d", "e.g. 400d", 0},
		{"    retention: -2d\n", "at least 1d", "", 0},
		{"    retention: 2d\n    allowed_lateness: 3d\n", "at least allowed_lateness (3d)", "lower allowed_lateness", 0},
	} {
		cfg, err := config.Parse([]byte(stream(c.extra)), nil)
		if c.msg == "" {
			if err != nil {
				t.Errorf("%q: %v", c.extra, err)
			} else if got := cfg.Streams["s"].Retention.D(); got != c.want {
				t.Errorf("%q: retention %v, want %v", c.extra, got, c.want)
			}
			continue
		}
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) != 1 {
			t.Errorf("%q: got %v, want one error", c.extra, err)
			continue
		}
		if e := errs.List[0]; e.Key != "streams.s.retention" || e.Line != 5 || !strings.Contains(e.Msg, c.msg) || !strings.Contains(e.Hint, c.hint) {
			t.Errorf("%q: got %s, want line 5: streams.s.retention: ...%s... (hint: ...%s...)", c.extra, e, c.msg, c.hint)
		}
	}
}

// nats.max_age must cover what the speed layer may refold since the last
// batch run: 2 × batch.every + epoch + archive.max_delay; with on-demand
// runs only, 0 or at least a day.
func TestLogAgeInterlock(t *testing.T) {
	cases := []struct {
		doc       string
		vars      map[string]string
		msg, hint string // msg "": valid
	}{
		{"nats: { max_age: 0 }", nil, "", ""},
		{"nats: { max_age: 7d }", nil, "", ""},
		// The defaults: 2 × 15m + 10s + 5s = 30m15s.
		{"nats: { max_age: 30m15s }", nil, "", ""},
		{"nats: { max_age: 30m }", nil, "at least 2 × batch.every + epoch + archive.max_delay (30m15s)", "two batch.every (15m), an epoch (10s) and archive.max_delay (5s)"},
		{"nats: { max_age: 1h }\nbatch: { every: 1h }", nil, "(2h0m15s)", "refold since the last batch run"},
		{"nats: { max_age: 2h }\nbatch: { every: 1h }\narchive: { max_delay: 1m }\nepoch: 1m", nil, "(2h2m)", "archive.max_delay (60s)"},
		{"nats: { max_age: 2h }\nbatch: { every: 1h }", map[string]string{"BRAID_NATS_MAX_AGE": "2h1m"}, "", ""},
		{"nats: { max_age: 3h }", map[string]string{"BRAID_BATCH_EVERY": "2h"}, "(4h0m15s)", ""},
		{"nats: { max_age: -1h }", nil, "must not be negative", "0 keeps the log for ever"},
		// The dedup window's ids are read from the log.
		{"nats: { max_age: 1m }\nbatch: { every: 10s }\nepoch: 1s\narchive: { max_delay: 1s }", nil, "at least nats.dedup_window (2m)", "repeated id"},
		{"nats: { max_age: 2m }\nbatch: { every: 10s }\nepoch: 1s\narchive: { max_delay: 1s }", nil, "", ""},
		{"nats: { max_age: 22s, dedup_window: 20s }\nbatch: { every: 10s }\nepoch: 1s\narchive: { max_delay: 1s }", nil, "", ""},
		// On demand only.
		{"batch: { every: 0 }\nnats: { max_age: 0 }", nil, "", ""},
		{"batch: { every: 0 }\nnats: { max_age: 1d }", nil, "", ""},
		{"batch: { every: 0 }\nnats: { max_age: 1d, dedup_window: 2d }", nil, "at least nats.dedup_window (48h)", ""},
		{"batch: { every: 0 }\nnats: { max_age: 12h }", nil, "must be 0 or at least 1d when batch.every is 0", "run a batch at least every (max_age - epoch - archive.max_delay) / 2"},
	}
	for _, c := range cases {
		key := "nats.max_age"
		if c.msg == "" {
			key = ""
		}
		oneError(t, c.doc, c.vars, key, c.msg, c.hint)
	}
	// The error is at the line of the key.
	_, err := config.Parse([]byte("batch: { every: 1h }\nnats:\n  replicas: 1\n  max_age: 1h\n"+minimal), nil)
	var errs *config.Errors
	if !errors.As(err, &errs) || len(errs.List) != 1 || errs.List[0].Line != 4 {
		t.Errorf("got %v, want one error at line 4", err)
	}
	// shop.yaml keeps its log 30 days with hourly runs.
	if _, err := config.Parse(repoFile(t, "configs/shop.yaml"), nil); err != nil {
		t.Errorf("configs/shop.yaml: %v", err)
	}
}
