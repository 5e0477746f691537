package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/configs"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
)

// repoFile reads a file relative to the repository root.
func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestExampleConfigsValidate(t *testing.T) {
	demo := repoFile(t, "configs/demo.yaml")
	if !bytes.Equal(demo, configs.Demo) {
		t.Fatal("the embedded demo configuration differs from configs/demo.yaml")
	}
	cfg, err := config.Parse(demo, nil)
	if err != nil {
		t.Fatalf("configs/demo.yaml: %v", err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatalf("compile demo: %v", err)
	}
	if got := strings.Join(cat.StreamOrder, ","); got != "orders,pageviews,sensors" {
		t.Errorf("streams %s", got)
	}
	if got := strings.Join(cat.ViewOrder, ","); got != "orders_by_country,pageviews_by_path,sensor_temps,daily_revenue" {
		t.Errorf("views in file order: %s", got)
	}
	if d := cat.Views["daily_revenue"]; d.Tier != logic.TierBatch || d.Window.Size != 24*time.Hour {
		t.Errorf("daily_revenue: tier %s, window %s", d.Tier, d.Window.Size)
	}
	var live []string
	for _, v := range cat.SpeedViewsOf("orders") {
		live = append(live, v.Name)
	}
	if got := strings.Join(live, ","); got != "orders_by_country" {
		t.Errorf("SpeedViewsOf(orders) = %s, want the live views only", got)
	}
	v := cat.Views["orders_by_country"]
	var names []string
	for _, m := range v.Measures {
		names = append(names, m.Name+"="+m.Kind.String())
	}
	if got := strings.Join(names, ","); got != "orders=count,revenue=sum,basket_avg=avg,biggest=max,smallest=min,items=sum,buyers=count_distinct,p95_amount=quantile" {
		t.Errorf("measures in file order: %s", got)
	}
	if v.Window.Size != time.Minute || v.Window.Hop != 0 || strings.Join(v.Dims, ",") != "country" || v.Stream != cat.Streams["orders"] {
		t.Errorf("orders_by_country: %+v", v.Window)
	}
	if pv := cat.ViewsOf("pageviews"); len(pv) != 1 || pv[0].Name != "pageviews_by_path" || strings.Join(pv[0].Dims, ",") != "path,mobile" {
		t.Errorf("ViewsOf(pageviews) = %v", pv)
	}
	orders := cat.Streams["orders"]
	if orders.AllowedLateness != 2*time.Minute || orders.MaxFuture != 5*time.Minute || orders.IDField != orders.FieldIndex("order_id") {
		t.Errorf("orders stream: %+v", orders)
	}
	if f := orders.Fields[orders.FieldIndex("email")]; f.PII != logic.PIIHash {
		t.Errorf("email pii %v", f.PII)
	}
	if f := orders.Fields[orders.FieldIndex("amount")]; !f.Required || f.Type != logic.TypeFloat {
		t.Errorf("amount %+v", f)
	}
	if !cat.Streams["sensors"].DedupContent {
		t.Error("sensors: dedup: content was lost")
	}
	if cfg.Epoch.D() != 10*time.Second || cfg.Batch.Every.D() != time.Minute || cfg.HTTP.Addr != ":8080" {
		t.Errorf("demo settings: epoch %v every %v addr %q", cfg.Epoch.D(), cfg.Batch.Every.D(), cfg.HTTP.Addr)
	}

	shop, err := config.Parse(repoFile(t, "configs/shop.yaml"), nil)
	if err != nil {
		t.Fatalf("configs/shop.yaml: %v", err)
	}
	if _, err := shop.Compile([]byte("k")); err != nil {
		t.Fatalf("compile shop: %v", err)
	}
	if shop.NATS.Replicas != 3 || shop.NATS.MaxAge.D() != 30*24*time.Hour || len(shop.Auth.Keys) != 3 || shop.Namespace != "shop" {
		t.Errorf("shop settings: %+v", shop.NATS)
	}
}

// want describes one expected validation error: its key (or a key under
// it), the lines it may point at, and a piece of its message.
type want struct {
	key      string
	from, to int
	msg      string
}

func TestBadConfigReportsEveryError(t *testing.T) {
	path := filepath.Join("testdata", "bad.yaml")
	_, err := config.Load(path)
	if err == nil {
		t.Fatal("bad.yaml loads without error")
	}
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("error %v is not ErrInvalid", err)
	}
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %T is not *config.Errors", err)
	}
	// Line numbers of testdata/bad.yaml. Errors about a whole view may point
	// at the view or at the offending key inside it.
	wants := []want{
		{"retention", 7, 7, "unknown key"},
		{"speed.max_wiat", 11, 11, "unknown key"},
		{"namespace", 5, 5, `bad namespace "Braid"`},
		{"epoch", 6, 6, "whole seconds"},
		{"speed.batch_size", 10, 10, "1..100000"},
		{"http.max_in_flight", 8, 8, "must be positive"},
		{"auth.keys[0]", 14, 14, "exactly one of token_env and sha256"},
		{"auth.keys[1].scopes", 15, 15, `unknown scope "write:all"`},
		{"streams.clicks.fields.qty", 24, 24, `unknown field type "integer"`},
		{"streams.clicks.pii.path", 25, 25, `unknown pii mode "scramble"`},
		{"streams.sensors", 26, 28, `time field "when" is not a declared field`},
		{"views.by_country", 30, 34, `where: at 16: unknown field "amout"`},
		{"views.tiny", 37, 39, "window 500ms is outside"},
		{"views.by_path.stream", 43, 43, `unknown stream "nowhere"`},
		{"views.spend", 47, 51, `avg needs a numeric field, "country" is string`},
		{"memory_limit", 52, 52, "must be 0 or at least 67108864"},
		{"archive.max_bytes", 53, 53, "must be at least 1048576"},
		{"nats.tls_cert", 54, 54, "a client certificate needs its key"},
	}
	found := make([]bool, len(errs.List))
	for _, w := range wants {
		ok := false
		for i, e := range errs.List {
			if found[i] || !strings.Contains(e.Msg, w.msg) {
				continue
			}
			if e.Key != w.key && !strings.HasPrefix(e.Key, w.key+".") {
				t.Errorf("%q: key %q, want %q", w.msg, e.Key, w.key)
			}
			if e.Line < w.from || e.Line > w.to {
				t.Errorf("%q (%s): line %d, want %d..%d", w.msg, e.Key, e.Line, w.from, w.to)
			}
			found[i], ok = true, true
			break
		}
		if !ok {
			t.Errorf("missing error %s: %s", w.key, w.msg)
		}
	}
	for i, e := range errs.List {
		if !found[i] {
			t.Errorf("unexpected error: %s", e.String())
		}
	}
	// The rendered message carries every line and key.
	text := err.Error()
	for _, e := range errs.List {
		if !strings.Contains(text, e.String()) || !strings.HasPrefix(e.String(), "line ") {
			t.Errorf("rendered error lacks %q", e.String())
		}
	}
	if t.Failed() {
		t.Logf("full error:\n%s", text)
	}
}

func TestSyntaxAndTypeErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		doc  string
		line int
		msg  string
	}{
		{"epoch: 10s\nstreams: [\n", 2, "did not find expected node content"},
		{"epoch: 10s\nspeed:\n  batch_size: lots\n", 3, "lots"},
		{"data_dir: x\nepoch: soon\n", 2, `bad duration "soon"`},
		{"data_dir: x\nbatch: { every: 2x }\n", 2, `bad duration "2x"`},
	}
	for _, c := range cases {
		_, err := config.Parse([]byte(c.doc), nil)
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) == 0 {
			t.Errorf("%q: error %v", c.doc, err)
			continue
		}
		e := errs.List[0]
		if e.Line != c.line || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v (line %d), want line %d and %q", c.doc, err, e.Line, c.line, c.msg)
		}
	}
}

const minimal = `
streams:
  s:
    time: ts
    fields: { ts: time, n: int }
views:
  v:
    stream: s
    window: 10s
    measures: { c: count() }
`

func TestDefaultsApply(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The documented defaults, written out independently of Default().
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", cfg.DataDir, "./data"},
		{"namespace", cfg.Namespace, "braid"},
		{"http.addr", cfg.HTTP.Addr, ":8080"},
		{"http.max_body_bytes", cfg.HTTP.MaxBodyBytes, int64(16 << 20)},
		{"http.max_in_flight", cfg.HTTP.MaxInFlight, 64},
		{"http.ingest_memory_bytes", cfg.HTTP.IngestMemoryBytes, int64(0)},
		{"http.ingest_memory_bytes in effect", cfg.HTTP.IngestMemory(), int64(64 << 20)},
		{"http.read_timeout", cfg.HTTP.ReadTimeout.D(), time.Minute},
		{"http.idle_timeout", cfg.HTTP.IdleTimeout.D(), 2 * time.Minute},
		{"nats.url", cfg.NATS.URL, ""},
		{"nats.replicas", cfg.NATS.Replicas, 1},
		{"nats.dedup_window", cfg.NATS.DedupWindow.D(), 2 * time.Minute},
		{"nats.publish_timeout", cfg.NATS.PublishTimeout.D(), 5 * time.Second},
		{"redis.url", cfg.Redis.URL, ""},
		{"epoch", cfg.Epoch.D(), 10 * time.Second},
		{"batch.every", cfg.Batch.Every.D(), 15 * time.Minute},
		{"batch.keep_versions", cfg.Batch.KeepVersions, 3},
		{"batch.settle_timeout", cfg.Batch.SettleTimeout.D(), 60 * time.Second},
		{"speed.batch_size", cfg.Speed.BatchSize, 2000},
		{"speed.max_wait", cfg.Speed.MaxWait.D(), 25 * time.Millisecond},
		{"speed.max_cells", cfg.Speed.MaxCells, 50000},
		{"archive.max_rows", cfg.Archive.MaxRows, 200000},
		{"archive.max_bytes", cfg.Archive.MaxBytes, int64(32 << 20)},
		{"archive.max_delay", cfg.Archive.MaxDelay.D(), 5 * time.Second},
		{"archive.compact", cfg.Archive.Compact, true},
		{"archive.target_file_bytes", int64(cfg.Archive.TargetFileBytes), int64(128 << 20)},
		{"storage.url", cfg.Storage.URL, ""},
		{"storage.endpoint", cfg.Storage.Endpoint, ""},
		{"storage.region", cfg.Storage.Region, ""},
		{"storage.access_key_env", cfg.Storage.AccessKeyEnv, "BRAID_S3_ACCESS_KEY"},
		{"storage.secret_key_env", cfg.Storage.SecretKeyEnv, "BRAID_S3_SECRET_KEY"},
		{"storage.path_style", cfg.Storage.PathStyle, false},
		{"nats.max_age", cfg.NATS.MaxAge.D(), time.Duration(0)},
		{"dlq.max_age", cfg.DLQ.MaxAge.D(), 7 * 24 * time.Hour},
		{"dlq.max_records", cfg.DLQ.MaxRecords, int64(10_000)},
		{"dlq.max_late", cfg.DLQ.MaxLate, int64(1_000_000)},
		{"dlq.max_msgs", cfg.DLQ.MaxMsgs, int64(0)},
		{"pii_key_env", cfg.PIIKeyEnv, "BRAID_PII_KEY"},
		{"memory_limit", cfg.MemoryLimit, int64(384 << 20)},
		{"auth.keys", len(cfg.Auth.Keys), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// Default() itself validates once streams and views are added, and is
	// what Parse starts from.
	d := config.Default()
	if d.HTTP != cfg.HTTP || d.NATS != cfg.NATS || d.Epoch != cfg.Epoch || d.Batch != cfg.Batch || d.Speed != cfg.Speed || d.Archive != cfg.Archive || d.DLQ != cfg.DLQ || d.MemoryLimit != cfg.MemoryLimit {
		t.Errorf("Parse of a minimal file differs from Default()")
	}

	// Setting one key of a section keeps the defaults of the others.
	cfg, err = config.Parse([]byte("http: { max_in_flight: 5 }\nspeed: { max_cells: 7 }\nbatch: { every: 0 }\n"+minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.MaxInFlight != 5 || cfg.HTTP.Addr != ":8080" || cfg.HTTP.MaxBodyBytes != 16<<20 {
		t.Errorf("http section: %+v", cfg.HTTP)
	}
	if cfg.Speed.MaxCells != 7 || cfg.Speed.BatchSize != 2000 || cfg.Speed.MaxWait.D() != 25*time.Millisecond {
		t.Errorf("speed section: %+v", cfg.Speed)
	}
	if cfg.Batch.Every.D() != 0 || cfg.Batch.KeepVersions != 3 {
		t.Errorf("batch section: %+v (every: 0 means on demand)", cfg.Batch)
	}
}

func TestSettleTimeout(t *testing.T) {
	cfg, err := config.Parse([]byte("batch: { settle_timeout: 0 }\n"+minimal), nil)
	if err != nil || cfg.Batch.SettleTimeout.D() != 0 {
		t.Fatalf("settle_timeout 0 (no wait): %v, %v", cfg, err)
	}
	for doc, warn := range map[string]bool{"": false, "batch: { settle_timeout: 0 }\n": false, "batch: { settle_timeout: 20s }\n": false, "batch: { settle_timeout: 14s }\n": true} {
		cfg, err := config.Parse([]byte(doc+minimal), nil)
		if err != nil {
			t.Fatal(err)
		}
		ws := cfg.Warnings()
		if got := len(ws) == 1 && strings.Contains(ws[0], "batch.settle_timeout"); got != warn || (!warn && len(ws) > 0) {
			t.Errorf("%q: warnings %q", doc, ws)
		}
	}
	for _, bad := range []string{"-1s", "2h"} {
		_, err := config.Parse([]byte("batch: { settle_timeout: "+bad+" }\n"+minimal), nil)
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) != 1 || errs.List[0].Key != "batch.settle_timeout" || errs.List[0].Line != 1 {
			t.Errorf("settle_timeout %s: %v", bad, err)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	file := "nats: { url: nats://file:4222 }\nhttp: { addr: \":7000\" }\nepoch: 10s\n" + minimal
	cfg, err := config.Parse([]byte(file), env(map[string]string{
		"BRAID_NATS_URL":         "nats://env-1:4222,nats://env-2:4222",
		"BRAID_HTTP_ADDR":        "127.0.0.1:9999",
		"BRAID_EPOCH":            "30s",
		"BRAID_REDIS_URL":        "redis://r:6379/2",
		"BRAID_DATA_DIR":         "/tmp/braid-env",
		"BRAID_SPEED_BATCH_SIZE": "17",
		"BRAID_NAMESPACE":        "", // empty: not an override
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.URL != "nats://env-1:4222,nats://env-2:4222" || cfg.HTTP.Addr != "127.0.0.1:9999" || cfg.Epoch.D() != 30*time.Second {
		t.Errorf("overrides not applied: nats %q http %q epoch %v", cfg.NATS.URL, cfg.HTTP.Addr, cfg.Epoch.D())
	}
	if cfg.Redis.URL != "redis://r:6379/2" || cfg.DataDir != "/tmp/braid-env" || cfg.Speed.BatchSize != 17 || cfg.Namespace != "braid" {
		t.Errorf("overrides: redis %q data_dir %q batch_size %d namespace %q", cfg.Redis.URL, cfg.DataDir, cfg.Speed.BatchSize, cfg.Namespace)
	}
	// Without overrides the file wins over the defaults.
	cfg, err = config.Parse([]byte(file), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.URL != "nats://file:4222" || cfg.HTTP.Addr != ":7000" {
		t.Errorf("file values: %q %q", cfg.NATS.URL, cfg.HTTP.Addr)
	}

	// Load reads the real environment.
	path := filepath.Join(t.TempDir(), "braid.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BRAID_NATS_URL", "nats://setenv:4222")
	t.Setenv("BRAID_HTTP_ADDR", ":1234")
	t.Setenv("BRAID_EPOCH", "1m")
	cfg, err = config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.URL != "nats://setenv:4222" || cfg.HTTP.Addr != ":1234" || cfg.Epoch.D() != time.Minute {
		t.Errorf("Load: nats %q http %q epoch %v", cfg.NATS.URL, cfg.HTTP.Addr, cfg.Epoch.D())
	}

	// Bad overrides are reported under the variable's name; overridden
	// values are validated like file values.
	bad := []struct {
		vars map[string]string
		key  string
		msg  string
	}{
		{map[string]string{"BRAID_EPOCH": "soon"}, "BRAID_EPOCH", `bad duration "soon"`},
		{map[string]string{"BRAID_SPEED_BATCH_SIZE": "lots"}, "BRAID_SPEED_BATCH_SIZE", "want an integer"},
		{map[string]string{"BRAID_EPOCH": "1500ms"}, "epoch", "whole seconds between 1s and 1h"},
	}
	for _, b := range bad {
		_, err := config.Parse([]byte(file), env(b.vars))
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) != 1 || errs.List[0].Key != b.key || !strings.Contains(errs.List[0].Msg, b.msg) {
			t.Errorf("%v: got %v, want one error at %s: %s", b.vars, err, b.key, b.msg)
		}
	}
}

func TestHTTPBodyLimits(t *testing.T) {
	cases := []struct {
		doc  string
		vars map[string]string
		key  string // "" when valid
		msg  string
	}{
		{"http: { read_timeout: 5s, idle_timeout: 30s, ingest_memory_bytes: 16777216 }\n", nil, "", ""},
		{"http: { max_body_bytes: 104857600 }\n", nil, "", ""}, // in effect 400 MiB of bodies
		{"http: { ingest_memory_bytes: 1048576 }\n", nil, "http.ingest_memory_bytes", "at least http.max_body_bytes (16777216)"},
		{"http: { ingest_memory_bytes: -1 }\n", nil, "http.ingest_memory_bytes", "must be 0 or at least"},
		{"http: { read_timeout: 0 }\n", nil, "http.read_timeout", "must be positive"},
		{"http: { idle_timeout: 0 }\n", nil, "http.idle_timeout", "must be positive"},
		{"", map[string]string{"BRAID_HTTP_READ_TIMEOUT": "-1s"}, "http.read_timeout", "must be positive"},
		{"", map[string]string{"BRAID_HTTP_IDLE_TIMEOUT": "soon"}, "BRAID_HTTP_IDLE_TIMEOUT", "bad duration"},
	}
	for _, c := range cases {
		_, err := config.Parse([]byte(c.doc+minimal), env(c.vars))
		if c.key == "" {
			if err != nil {
				t.Errorf("%q %v: %v", c.doc, c.vars, err)
			}
			continue
		}
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) != 1 || errs.List[0].Key != c.key || !strings.Contains(errs.List[0].Msg, c.msg) {
			t.Errorf("%q %v: got %v, want one error at %s: %s", c.doc, c.vars, err, c.key, c.msg)
		}
	}
	cfg, err := config.Parse([]byte("http: { max_body_bytes: 1048576 }\n"+minimal), env(map[string]string{"BRAID_HTTP_READ_TIMEOUT": "15s", "BRAID_HTTP_IDLE_TIMEOUT": "1m"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.ReadTimeout.D() != 15*time.Second || cfg.HTTP.IdleTimeout.D() != time.Minute || cfg.HTTP.IngestMemory() != 4<<20 {
		t.Errorf("http: %+v, ingest memory %d", cfg.HTTP, cfg.HTTP.IngestMemory())
	}
}

func TestMemoryLimitAndArchiveBytes(t *testing.T) {
	cases := []struct {
		doc  string
		vars map[string]string
		key  string // "" when valid
		msg  string
	}{
		{"memory_limit: 0\n", nil, "", ""}, // no limit
		{"memory_limit: 1073741824\narchive: { max_bytes: 1048576 }\n", nil, "", ""},
		{"memory_limit: 67108864\nhttp: { query_cache_bytes: 0 }\narchive: { max_bytes: 1048576 }\n", nil, "", ""}, // the smallest
		{"memory_limit: -1\n", nil, "memory_limit", "must be 0 or at least 67108864"},
		{"memory_limit: 1000000\n", nil, "memory_limit", "must be 0 or at least 67108864"},
		{"memory_limit: 268435456\n", nil, "memory_limit", "at least twice archive.max_bytes + http.query_cache_bytes (335544320)"},
		{"memory_limit: 268435456\nhttp: { query_cache_bytes: 67108864 }\n", nil, "", ""},
		{"archive: { max_bytes: 0 }\n", nil, "archive.max_bytes", "at least 1048576"},
		{"archive: { max_bytes: 1000 }\n", nil, "archive.max_bytes", "at least 1048576"},
		{"", map[string]string{"BRAID_MEMORY_LIMIT": "1000"}, "memory_limit", "must be 0 or at least"},
		{"", map[string]string{"BRAID_MEMORY_LIMIT": "lots"}, "BRAID_MEMORY_LIMIT", "want an integer"},
		{"", map[string]string{"BRAID_ARCHIVE_MAX_BYTES": "-5"}, "archive.max_bytes", "at least 1048576"},
	}
	for _, c := range cases {
		_, err := config.Parse([]byte(c.doc+minimal), env(c.vars))
		if c.key == "" {
			if err != nil {
				t.Errorf("%q %v: %v", c.doc, c.vars, err)
			}
			continue
		}
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) != 1 || errs.List[0].Key != c.key || !strings.Contains(errs.List[0].Msg, c.msg) {
			t.Errorf("%q %v: got %v, want one error at %s: %s", c.doc, c.vars, err, c.key, c.msg)
		}
	}
	cfg, err := config.Parse([]byte(minimal), env(map[string]string{"BRAID_MEMORY_LIMIT": "1073741824", "BRAID_ARCHIVE_MAX_BYTES": "8388608"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MemoryLimit != 1<<30 || cfg.Archive.MaxBytes != 8<<20 || cfg.Archive.MaxRows != 200000 {
		t.Errorf("overrides: memory_limit %d archive %+v", cfg.MemoryLimit, cfg.Archive)
	}
}

func TestQueryBudget(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.QueryMaxCells != defaults.HTTPQueryMaxCells || cfg.HTTP.QueryMaxRows != defaults.HTTPQueryMaxRows {
		t.Errorf("defaults: %+v", cfg.HTTP)
	}
	cfg, err = config.Parse([]byte("http: { query_max_cells: 0, query_max_rows: 5000 }\n"+minimal), env(map[string]string{"BRAID_HTTP_QUERY_MAX_ROWS": "7000"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.QueryMaxCells != 0 || cfg.HTTP.QueryMaxRows != 7000 {
		t.Errorf("set: %+v", cfg.HTTP)
	}
	for _, c := range []struct{ doc, key string }{
		{"http: { query_max_cells: -1 }\n", "http.query_max_cells"},
		{"http: { query_max_rows: -1 }\n", "http.query_max_rows"},
	} {
		_, err := config.Parse([]byte(c.doc+minimal), env(nil))
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) != 1 || errs.List[0].Key != c.key || !strings.Contains(errs.List[0].Msg, "must not be negative") {
			t.Errorf("%q: got %v, want one error at %s", c.doc, err, c.key)
		}
	}
}

func TestParseDuration(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true}, {"0", 0, true}, {"10s", 10 * time.Second, true}, {"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true}, {"2d", 48 * time.Hour, true}, {" 100ms ", 100 * time.Millisecond, true},
		{"5x", 0, false}, {"d", 0, false}, {"1.5d", 0, false}, {"ten", 0, false},
	}
	for _, c := range cases {
		got, err := config.ParseDuration(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v", c.in, got, err)
		}
	}
}

// TestWarnings: a size limit on the log without an age limit is valid but
// warned about (a full log would refuse events for ever); with max_age, or
// without limits, there is nothing to say.
func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		nats string
		warn bool
	}{
		{"nats: { max_msgs: 1000 }", true},
		{"nats: { max_bytes: 10485760 }", true},
		{"nats: { max_msgs: 1000, max_age: 7d }", false},
		{"nats: {}", false},
	} {
		cfg, err := config.Parse([]byte(tc.nats+"\n"+minimal), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.nats, err)
		}
		ws := cfg.Warnings()
		if got := len(ws) == 1 && strings.Contains(ws[0], "nats.max_age"); got != tc.warn || (!tc.warn && len(ws) > 0) {
			t.Errorf("%s: warnings %q", tc.nats, ws)
		}
	}
}

// TestDLQBudgets: dead-letter and too-late budgets are per stream keys of
// their own; the old shared dlq.max_msgs still loads, with a warning that
// it no longer applies; negative budgets are refused.
func TestDLQBudgets(t *testing.T) {
	cfg, err := config.Parse([]byte("dlq: { max_records: 50, max_late: 70 }\n"+minimal), nil)
	if err != nil || cfg.DLQ.MaxRecords != 50 || cfg.DLQ.MaxLate != 70 || len(cfg.Warnings()) != 0 {
		t.Fatalf("budgets: %+v %v %q", cfg.DLQ, err, cfg.Warnings())
	}
	cfg, err = config.Parse([]byte("dlq: { max_msgs: 1000 }\n"+minimal), nil)
	if err != nil || cfg.DLQ.MaxRecords != 10_000 {
		t.Fatalf("old key: %v", err)
	}
	if ws := cfg.Warnings(); len(ws) != 1 || !strings.Contains(ws[0], "dlq.max_msgs no longer applies") || !strings.Contains(ws[0], "dlq.max_records") {
		t.Fatalf("old key warnings %q", ws)
	}
	_, err = config.Parse([]byte("dlq: { max_records: -1, max_late: -2 }\n"+minimal), nil)
	if err == nil || !strings.Contains(err.Error(), "dlq.max_records: must not be negative") || !strings.Contains(err.Error(), "dlq.max_late: must not be negative") {
		t.Fatalf("negative budgets: %v", err)
	}
	cfg, err = config.Parse([]byte(minimal), func(k string) string {
		return map[string]string{"BRAID_DLQ_MAX_RECORDS": "9"}[k]
	})
	if err != nil || cfg.DLQ.MaxRecords != 9 {
		t.Fatalf("environment override: %v %+v", err, cfg)
	}
}

// TestInspectKeepsAnInvalidConfig: `braid check` gets the configuration
// with its errors, and places errors of its own at their keys' lines.
func TestInspectKeepsAnInvalidConfig(t *testing.T) {
	src := "epoch: 0s\nstreams:\n  iot:\n    time: ts\n    fields:\n      ts: time\n      device: int\n      bad: floot\nviews:\n  v: {stream: iot, window: 1m, measures: {n: count()}}\n"
	cfg, err := config.Inspect([]byte(src), nil)
	var verrs *config.Errors
	if !errors.As(err, &verrs) || cfg == nil {
		t.Fatalf("Inspect: %v, config %v", err, cfg)
	}
	if c, err := config.Parse([]byte(src), nil); c != nil || err == nil {
		t.Fatalf("Parse of an invalid config: %v %v", c, err)
	}
	got := cfg.FieldTypes("iot")
	if len(got) != 2 || got["ts"] != logic.TypeTime || got["device"] != logic.TypeInt {
		t.Fatalf("FieldTypes = %v", got)
	}
	if cfg.FieldTypes("nope") != nil {
		t.Fatal("FieldTypes of an undeclared stream")
	}
	e := cfg.ErrorAt("streams.iot.fields.device", "m", "h")
	if e.Line != 7 || e.String() != "line 7: streams.iot.fields.device: m (hint: h)" {
		t.Fatalf("ErrorAt = %+v %q", e, e.String())
	}
	if _, err := config.Inspect([]byte("streams: ["), nil); err == nil {
		t.Fatal("bad YAML accepted")
	}
}

// TestEveryKindOfErrorInOneRun: a bad duration, a value of the wrong type,
// a field type that cannot be read, unknown and repeated keys and mistakes
// in a view's where, group_by and measures are all reported in one run,
// each at its own line and key; a field of an unreadable type stands for
// whatever it was meant to be (max(amount) is not reported), and a bad
// value is not reported again by the validation of its key.
func TestEveryKindOfErrorInOneRun(t *testing.T) {
	_, err := config.Load(filepath.Join("testdata", "mixed.yaml"))
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v is not *config.Errors", err)
	}
	wants := []struct {
		key  string
		line int
		msg  string
	}{
		{"epoch", 4, `bad duration "30x"`},
		{"archive.max_delay", 5, `bad duration "soon"`},
		{"archive.max_rows", 5, "cannot unmarshal !!str `many` into int"},
		{"retries", 6, "unknown key"},
		{"streams.orders.fields.amount", 10, `unknown field type "flaot"`},
		{"streams.orders.required[1]", 11, `required field "contry" is not a declared field`},
		{"streams.orders.pii.email", 12, `pii field "email" is not a declared field`},
		{"views.by_country.group_by[1]", 17, `group_by: field "cuntry" is not declared in stream orders`},
		{"views.by_country.where", 18, `where: at 15: unknown field "amout"`},
		{"views.by_country.measures.total", 21, `measure "sum(itmes)": field "itmes" is not declared`},
		{"views.by_country.measures.p", 23, `measure "quantile(items)": quantile takes 2 argument(s), got 1`},
		{"views.by_country.colour", 24, "unknown key"},
		{"views.late.window", 27, `bad duration "90x"`},
		{"views.late.where", 28, `where: at 1: unknown field "contry"`},
		{"views.late.measures.n", 31, "repeated key (first at line 30)"},
	}
	got := map[string]config.Error{}
	for _, e := range errs.List {
		if _, dup := got[e.Key]; dup {
			t.Errorf("two errors at %s: %v", e.Key, err)
		}
		got[e.Key] = e
	}
	for _, w := range wants {
		e, ok := got[w.key]
		if !ok {
			t.Errorf("missing error at %s: %s", w.key, w.msg)
			continue
		}
		if e.Line != w.line || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("%s: got %q, want line %d: %s", w.key, e.String(), w.line, w.msg)
		}
		delete(got, w.key)
	}
	for _, e := range got {
		t.Errorf("unexpected error: %s", e.String())
	}
	if t.Failed() {
		t.Logf("full error:\n%v", err)
	}
}

// TestValueErrorsKeepDecoding: a value of the wrong type no longer stops
// the reading of the file: the other values are read, the bad one keeps
// its default, and Inspect returns the configuration.
func TestValueErrorsKeepDecoding(t *testing.T) {
	doc := "epoch: 30x\nhttp: { addr: \":9000\", max_in_flight: lots }\n" + minimal
	cfg, err := config.Inspect([]byte(doc), nil)
	var errs *config.Errors
	if !errors.As(err, &errs) || cfg == nil || len(errs.List) != 2 {
		t.Fatalf("Inspect: %v, config %v", err, cfg)
	}
	if cfg.Epoch.D() != 10*time.Second || cfg.HTTP.Addr != ":9000" || cfg.HTTP.MaxInFlight != 64 || len(cfg.Views.Names) != 1 {
		t.Errorf("config read around the bad values: epoch %v http %+v views %v", cfg.Epoch.D(), cfg.HTTP, cfg.Views.Names)
	}
	// A bad environment override is reported with the file's errors.
	_, err = config.Inspect([]byte("speed: { batch_size: 0 }\n"+minimal), env(map[string]string{"BRAID_EPOCH": "soon"}))
	if !errors.As(err, &errs) || len(errs.List) != 2 || errs.List[0].Key != "speed.batch_size" || errs.List[1].Key != "BRAID_EPOCH" {
		t.Errorf("override and file errors: %v", err)
	}
}
