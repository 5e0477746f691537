// Package config reads Braid's YAML configuration: the documented fields,
// their defaults (Default), environment overrides (BRAID_<SECTION>_<KEY>) and
// validation that names the key and line of every error. It compiles the
// streams and views into logic types.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/braid-data/braid/logic"
)

// Config is the whole configuration file.
type Config struct {
	DataDir   string   `yaml:"data_dir"`  // lake, embedded NATS store, batch views
	Namespace string   `yaml:"namespace"` // prefix of NATS streams/subjects and Redis keys
	HTTP      HTTP     `yaml:"http"`
	NATS      NATS     `yaml:"nats"`
	Redis     Redis    `yaml:"redis"`
	Epoch     Duration `yaml:"epoch"` // arrival-epoch length for the batch/speed split
	Batch     Batch    `yaml:"batch"`
	Speed     Speed    `yaml:"speed"`
	Archive   Archive  `yaml:"archive"`
	DLQ       DLQ      `yaml:"dlq"`
	Auth      Auth     `yaml:"auth"`
	PIIKeyEnv string   `yaml:"pii_key_env"` // env var holding the PII HMAC key; else a key kept in data_dir
	// MemoryLimit is the soft limit of each braid process's Go memory
	// (heap and stacks, the embedded nats-server's included), in bytes:
	// the collector works harder near it instead of letting the heap grow
	// to twice the live data. 0: no limit. GOMEMLIMIT, when set, wins.
	MemoryLimit int64 `yaml:"memory_limit"`

	Streams map[string]StreamConfig `yaml:"streams"`
	Views   Views                   `yaml:"views"`

	root *yaml.Node
}

// HTTP configures the API server.
type HTTP struct {
	Addr         string `yaml:"addr"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"` // larger ingest bodies get 413
	MaxInFlight  int    `yaml:"max_in_flight"`  // concurrent ingest requests before 429
	// QueryCacheBytes bounds the memory kept for answering queries again:
	// encoded answers and the final windows' encoded rows (0: no cache).
	QueryCacheBytes int64 `yaml:"query_cache_bytes"`
	// MaxQueryRows bounds the stored rows (batch view rows and speed
	// cells, window × group) one query reads; a range holding more is
	// refused with 400.
	MaxQueryRows int `yaml:"max_query_rows"`
}

// NATS configures the event log.
type NATS struct {
	URL            string   `yaml:"url"` // "" = embedded server
	Creds          string   `yaml:"creds"`
	NKey           string   `yaml:"nkey"`
	User           string   `yaml:"user"`
	Password       string   `yaml:"password"`
	TLSCA          string   `yaml:"tls_ca"`
	TLSCert        string   `yaml:"tls_cert"`
	TLSKey         string   `yaml:"tls_key"`
	Replicas       int      `yaml:"replicas"`
	DedupWindow    Duration `yaml:"dedup_window"` // duplicate event ids within it are stored once
	PublishTimeout Duration `yaml:"publish_timeout"`
	MaxAge         Duration `yaml:"max_age"` // retention of clean events in the log (0: forever)
	// Per-stream limits of the clean log (0: none). The log refuses new
	// events beyond them (JetStream DiscardNew): ingest answers 429 with
	// Retry-After instead of dropping old events.
	MaxMsgs  int64 `yaml:"max_msgs"`
	MaxBytes int64 `yaml:"max_bytes"`
}

// Redis configures the speed store.
type Redis struct {
	URL string `yaml:"url"` // "" = a redis-server started by braid, else an embedded dev server
}

// Batch configures batch runs.
type Batch struct {
	Every        Duration `yaml:"every"` // 0 = on demand only
	KeepVersions int      `yaml:"keep_versions"`
	// SettleTimeout bounds how long an on-demand run waits for the lake to
	// cover what the log had acknowledged when it was asked for (0: no wait).
	SettleTimeout Duration `yaml:"settle_timeout"`
}

// Speed configures the speed layer's micro-batches.
type Speed struct {
	BatchSize int      `yaml:"batch_size"` // log records per fetch and commit at most
	MaxWait   Duration `yaml:"max_wait"`   // longest wait to fill a micro-batch
	MaxCells  int      `yaml:"max_cells"`  // delta cells before an early flush
}

// Archive configures the archiver.
type Archive struct {
	MaxRows  int      `yaml:"max_rows"`  // rows per file at most
	MaxBytes int64    `yaml:"max_bytes"` // memory of the rows held for one write at most
	MaxDelay Duration `yaml:"max_delay"` // longest an event waits before its file is written
}

// DLQ configures dead-letter retention.
type DLQ struct {
	MaxAge  Duration `yaml:"max_age"`
	MaxMsgs int64    `yaml:"max_msgs"`
}

// Auth lists API keys; an empty list means open mode (development only).
type Auth struct {
	Keys []Key `yaml:"keys"`
}

// Key is one API key.
type Key struct {
	Name     string   `yaml:"name"`
	TokenEnv string   `yaml:"token_env"` // env var holding the token
	SHA256   string   `yaml:"sha256"`    // or the token's SHA-256, hex
	Scopes   []string `yaml:"scopes"`
}

// StreamConfig is one stream as written in the file.
type StreamConfig struct {
	Time            string            `yaml:"time"`
	ID              string            `yaml:"id"`
	AllowedLateness Duration          `yaml:"allowed_lateness"`
	MaxFuture       Duration          `yaml:"max_future"`
	Strict          bool              `yaml:"strict"`
	Dedup           string            `yaml:"dedup"` // "" (by id field) | content
	MaxValueBytes   int               `yaml:"max_value_bytes"`
	Fields          map[string]string `yaml:"fields"`
	Required        []string          `yaml:"required"`
	PII             map[string]string `yaml:"pii"`
}

// ViewConfig is one view as written in the file.
type ViewConfig struct {
	Stream   string   `yaml:"stream"`
	Window   Duration `yaml:"window"`
	Hop      Duration `yaml:"hop"`
	GroupBy  []string `yaml:"group_by"`
	Where    string   `yaml:"where"`
	Measures Measures `yaml:"measures"`
}

// Views keeps the views in file order.
type Views struct {
	Names  []string
	ByName map[string]ViewConfig
}

// UnmarshalYAML keeps the order of the views.
func (v *Views) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: views: want a mapping of view names", n.Line)
	}
	v.ByName = map[string]ViewConfig{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		var vc ViewConfig
		if err := n.Content[i+1].Decode(&vc); err != nil {
			return err
		}
		name := n.Content[i].Value
		v.Names = append(v.Names, name)
		v.ByName[name] = vc
	}
	return nil
}

// Measures keeps the measures in file order.
type Measures []logic.MeasureDef

// UnmarshalYAML keeps the order of the measures.
func (m *Measures) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: measures: want name: expression pairs", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		*m = append(*m, logic.MeasureDef{Name: n.Content[i].Value, Expr: n.Content[i+1].Value})
	}
	return nil
}

// Duration is a time.Duration written as "10s", "5m", "1h" or "1d".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// ParseDuration reads "", "90s", "5m", "1h30m" or "2d".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (want e.g. 10s, 5m, 1h, 1d)", s)
	}
	return d, nil
}

// DefaultMemoryLimit is memory_limit's default: 384 MiB of Go memory keeps
// `braid up` under 512 MiB resident (with its code and DuckDB) at full
// ingest on a laptop. A process whose live data outgrows it is slowed down
// by the collector, never stopped: the limit is soft.
const DefaultMemoryLimit = 384 << 20

// MinMemoryLimit is the smallest memory_limit other than 0.
const MinMemoryLimit = 64 << 20

// Default returns the configuration every field falls back to.
func Default() Config {
	return Config{
		DataDir:   "./data",
		Namespace: "braid",
		HTTP:      HTTP{Addr: ":8080", MaxBodyBytes: 16 << 20, MaxInFlight: 64, QueryCacheBytes: 128 << 20, MaxQueryRows: 1_000_000},
		NATS:      NATS{Replicas: 1, DedupWindow: Duration(2 * time.Minute), PublishTimeout: Duration(5 * time.Second), MaxMsgs: 0, MaxBytes: 0},
		Epoch:     Duration(10 * time.Second),
		Batch:     Batch{Every: Duration(15 * time.Minute), KeepVersions: 3, SettleTimeout: Duration(time.Minute)},
		Speed:     Speed{BatchSize: 2000, MaxWait: Duration(25 * time.Millisecond), MaxCells: 50000},
		Archive:   Archive{MaxRows: 200000, MaxBytes: 32 << 20, MaxDelay: Duration(5 * time.Second)},
		DLQ:       DLQ{MaxAge: Duration(7 * 24 * time.Hour), MaxMsgs: 1_000_000},
		PIIKeyEnv: "BRAID_PII_KEY",

		MemoryLimit: DefaultMemoryLimit,
	}
}

// Load reads, overrides from the environment and validates a file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, os.Getenv)
}

// Parse reads a configuration from YAML, applies environment overrides
// (getenv may be nil) and validates it. A validation failure is a *Errors.
func Parse(data []byte, getenv func(string) string) (*Config, error) {
	cfg, err := Inspect(data, getenv)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// Inspect is Parse that also returns the configuration when it is invalid
// (nil only when the YAML cannot be read), so that `braid check` can check
// it further and report every error at once.
func Inspect(data []byte, getenv func(string) string) (*Config, error) {
	cfg := Default()
	var unknown []Error
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Errors{List: []Error{{Key: "", Line: yamlLine(err), Msg: err.Error(), Hint: "check the YAML syntax"}}}
	}
	if len(root.Content) > 0 {
		dec := root.Content[0]
		unknown = unknownKeys(dec, reflect.TypeOf(cfg), "")
		if err := dec.Decode(&cfg); err != nil {
			return nil, &Errors{List: []Error{{Line: yamlLine(err), Msg: lineRe.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  "), ""), Hint: "check the value's type"}}}
		}
		cfg.root = dec
	}
	if getenv != nil {
		if err := applyEnv(&cfg, getenv); err != nil {
			return &cfg, err
		}
	}
	err := cfg.Validate()
	if len(unknown) > 0 {
		var verrs *Errors
		if !errors.As(err, &verrs) {
			verrs = &Errors{}
		}
		verrs.List = append(unknown, verrs.List...)
		return &cfg, verrs
	}
	if err != nil {
		return &cfg, err
	}
	return &cfg, nil
}

// unknownKeys lists every key of the document that no field of t declares,
// with its line, so a typo is reported together with every other error.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) []Error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []Error
	switch {
	case t == reflect.TypeOf(Views{}):
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				out = append(out, unknownKeys(n.Content[i+1], reflect.TypeOf(ViewConfig{}), join(path, n.Content[i].Value))...)
			}
		}
	case t == reflect.TypeOf(Measures{}) || t == reflect.TypeOf(Duration(0)):
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		known := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" {
				known[tag] = t.Field(i).Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := known[k.Value]
			if !ok {
				out = append(out, Error{Key: join(path, k.Value), Line: k.Line, Msg: "unknown key", Hint: "see configs/demo.yaml for the known keys"})
				continue
			}
			out = append(out, unknownKeys(n.Content[i+1], ft, join(path, k.Value))...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			out = append(out, unknownKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			out = append(out, unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var lineRe = regexp.MustCompile(`line (\d+): `)

func yamlLine(err error) int {
	if m := lineRe.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// applyEnv sets scalar fields from BRAID_<SECTION>_<KEY> (or BRAID_<KEY> for
// top-level scalars), e.g. BRAID_NATS_URL, BRAID_HTTP_ADDR, BRAID_DATA_DIR.
func applyEnv(cfg *Config, getenv func(string) string) error {
	var errs Errors
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" || !f.IsExported() {
				continue
			}
			name := prefix + "_" + strings.ToUpper(tag)
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Views{}) && f.Type != reflect.TypeOf(Auth{}) {
				walk(fv, name)
				continue
			}
			val := getenv(name)
			if val == "" {
				continue
			}
			if err := setScalar(fv, val); err != nil {
				errs.List = append(errs.List, Error{Key: name, Msg: err.Error(), Hint: "environment override"})
			}
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "BRAID")
	if len(errs.List) > 0 {
		return &errs
	}
	return nil
}

func setScalar(fv reflect.Value, val string) error {
	switch {
	case fv.Type() == reflect.TypeOf(Duration(0)):
		d, err := ParseDuration(val)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(val)
	case fv.Kind() == reflect.Int || fv.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", val)
		}
		fv.SetInt(n)
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(val)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", val)
		}
		fv.SetBool(b)
	}
	return nil
}

// Error is one validation error: where it is and what to do.
type Error struct {
	Key  string // dotted path, e.g. views.orders_by_country.window
	Line int    // 0 when unknown
	Msg  string
	Hint string
}

func (e Error) String() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, "%s: ", e.Key)
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		fmt.Fprintf(&b, " (hint: %s)", e.Hint)
	}
	return b.String()
}

// Errors is every validation error of a configuration.
type Errors struct{ List []Error }

func (e *Errors) Error() string {
	parts := make([]string, len(e.List))
	for i, x := range e.List {
		parts[i] = x.String()
	}
	return "invalid configuration:\n  " + strings.Join(parts, "\n  ")
}

// ErrInvalid is matched by errors.Is for any *Errors.
var ErrInvalid = errors.New("invalid configuration")

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Errors) Is(target error) bool { return target == ErrInvalid }

var nameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Validate checks every field and compiles every stream and view, collecting
// all errors.
// Warnings lists settings that are valid but probably not what was meant;
// commands log them at start.
func (c *Config) Warnings() []string {
	var out []string
	if (c.NATS.MaxMsgs > 0 || c.NATS.MaxBytes > 0) && c.NATS.MaxAge.D() == 0 {
		out = append(out, "nats.max_msgs or nats.max_bytes is set without nats.max_age: nothing ever leaves a full log, so once it is full ingest answers 429 until it is purged; set nats.max_age too")
	}
	if st := c.Batch.SettleTimeout.D(); st > 0 && st < c.Epoch.D()+c.Archive.MaxDelay.D() {
		out = append(out, fmt.Sprintf("batch.settle_timeout %v is shorter than epoch + archive.max_delay (%v): on-demand batch runs will often stop waiting before they cover what was acknowledged", st, c.Epoch.D()+c.Archive.MaxDelay.D()))
	}
	return out
}

func (c *Config) Validate() error {
	var errs []Error
	add := func(key, hint, format string, args ...any) {
		errs = append(errs, Error{Key: key, Line: c.lineOf(key), Msg: fmt.Sprintf(format, args...), Hint: hint})
	}
	if c.DataDir == "" {
		add("data_dir", "a directory for the lake and batch views", "must not be empty")
	}
	if !regexp.MustCompile(`^[a-z][a-z0-9_-]{0,30}$`).MatchString(c.Namespace) {
		add("namespace", "lowercase letters, digits, - and _", "bad namespace %q", c.Namespace)
	}
	if c.Epoch.D() < time.Second || c.Epoch.D() > time.Hour || c.Epoch.D()%time.Second != 0 {
		add("epoch", "e.g. 10s", "must be whole seconds between 1s and 1h")
	}
	if c.Batch.Every.D() != 0 && c.Batch.Every.D() < c.Epoch.D() {
		add("batch.every", "a batch run covers whole epochs", "must be 0 (on demand) or at least the epoch")
	}
	if c.Batch.KeepVersions < 1 {
		add("batch.keep_versions", "keep at least the current version", "must be at least 1")
	}
	if c.Batch.SettleTimeout.D() < 0 || c.Batch.SettleTimeout.D() > time.Hour {
		add("batch.settle_timeout", "e.g. 60s; 0 takes what the lake covers without waiting", "must be between 0 and 1h")
	}
	if c.Speed.BatchSize < 1 || c.Speed.BatchSize > 100000 {
		add("speed.batch_size", "e.g. 2000", "must be in 1..100000")
	}
	if c.Speed.MaxWait.D() <= 0 {
		add("speed.max_wait", "e.g. 100ms", "must be positive")
	}
	if c.Speed.MaxCells < 1 {
		add("speed.max_cells", "e.g. 50000", "must be positive")
	}
	if c.Archive.MaxRows < 1 {
		add("archive.max_rows", "e.g. 200000", "must be positive")
	}
	if c.Archive.MaxBytes < 1<<20 {
		add("archive.max_bytes", "e.g. 33554432 (32 MiB)", "must be at least 1048576 (1 MiB)")
	}
	if c.Archive.MaxDelay.D() <= 0 {
		add("archive.max_delay", "e.g. 5s", "must be positive")
	}
	if c.NATS.DedupWindow.D() <= 0 {
		add("nats.dedup_window", "e.g. 2m", "must be positive")
	}
	if c.NATS.PublishTimeout.D() <= 0 {
		add("nats.publish_timeout", "e.g. 5s", "must be positive")
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		add("nats.replicas", "1 for one server, 3 for a cluster", "must be in 1..5")
	}
	if c.NATS.MaxMsgs < 0 {
		add("nats.max_msgs", "0 for no limit, e.g. 50000000", "must not be negative")
	}
	if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
		add("nats.tls_cert", "set nats.tls_cert and nats.tls_key together", "a client certificate needs its key, and a key its certificate")
	}
	if c.NATS.MaxBytes < 0 || (c.NATS.MaxBytes > 0 && c.NATS.MaxBytes < 1<<20) {
		add("nats.max_bytes", "0 for no limit, e.g. 10737418240 (10 GiB)", "must be 0 or at least 1048576 (one NATS message)")
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		add("http.max_body_bytes", "e.g. 16777216", "must be at least 1024")
	}
	if c.HTTP.MaxInFlight < 1 {
		add("http.max_in_flight", "e.g. 64", "must be positive")
	}
	if c.HTTP.QueryCacheBytes < 0 {
		add("http.query_cache_bytes", "e.g. 134217728, or 0 for no cache", "must not be negative")
	}
	if c.HTTP.MaxQueryRows < 1 {
		add("http.max_query_rows", "e.g. 1000000", "must be positive")
	}
	switch buffers := c.Archive.MaxBytes + c.HTTP.QueryCacheBytes; {
	case c.MemoryLimit < 0 || (c.MemoryLimit > 0 && c.MemoryLimit < MinMemoryLimit):
		add("memory_limit", "e.g. 402653184 (384 MiB), or 0 for no limit", "must be 0 or at least %d (64 MiB)", MinMemoryLimit)
	case c.MemoryLimit > 0 && c.MemoryLimit < 2*buffers:
		add("memory_limit", "raise it, or lower archive.max_bytes and http.query_cache_bytes",
			"must be at least twice archive.max_bytes + http.query_cache_bytes (%d)", 2*buffers)
	}
	for i, k := range c.Auth.Keys {
		key := fmt.Sprintf("auth.keys[%d]", i)
		if k.Name == "" {
			add(key+".name", "", "a key needs a name")
		}
		if (k.TokenEnv == "") == (k.SHA256 == "") {
			add(key, "set token_env or sha256", "a key needs exactly one of token_env and sha256")
		}
		if k.SHA256 != "" && !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(k.SHA256) {
			add(key+".sha256", "sha256sum of the token, 64 hex digits", "bad hash")
		}
		for _, s := range k.Scopes {
			if !validScope(s) {
				add(key+".scopes", "admin, ingest:<stream>, read:<view pattern>", "unknown scope %q", s)
			}
		}
	}
	if len(c.Streams) == 0 {
		add("streams", "declare at least one stream", "no streams")
	}
	streams := map[string]*logic.Stream{}
	for _, name := range sortedKeys(c.Streams) {
		key := "streams." + name
		if !nameRe.MatchString(name) {
			add(key, "lowercase letters, digits and _", "bad stream name")
			continue
		}
		def, fieldErrs := c.streamDef(name)
		for _, fe := range fieldErrs {
			add(key+"."+fe.Key, fe.Hint, "%s", fe.Msg)
		}
		if len(fieldErrs) > 0 {
			continue
		}
		s, err := logic.NewStream(name, def, []byte("validate"))
		if err != nil {
			add(key, "", "%v", err)
			continue
		}
		streams[name] = s
	}
	if len(c.Views.Names) == 0 {
		add("views", "declare at least one view", "no views")
	}
	for _, name := range c.Views.Names {
		key := "views." + name
		vc := c.Views.ByName[name]
		if !nameRe.MatchString(name) {
			add(key, "lowercase letters, digits and _", "bad view name")
			continue
		}
		s, ok := streams[vc.Stream]
		if !ok {
			if _, declared := c.Streams[vc.Stream]; !declared {
				add(key+".stream", "one of the streams above", "unknown stream %q", vc.Stream)
			}
			continue
		}
		if vc.Window.D()%c.Epoch.D() != 0 && c.Epoch.D()%vc.Window.D() != 0 {
			// Not an error: windows and epochs are independent. Kept as a note for readers.
		}
		if _, err := logic.NewView(name, viewDef(vc), s); err != nil {
			add(key+"."+viewErrKey(err.Error()), "", "%v", err)
		}
	}
	if len(errs) > 0 {
		return &Errors{List: errs}
	}
	return nil
}

func validScope(s string) bool {
	if s == "admin" {
		return true
	}
	for _, p := range []string{"ingest:", "read:"} {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

type fieldErr struct{ Key, Msg, Hint string }

func (c *Config) streamDef(name string) (logic.StreamDef, []fieldErr) {
	sc := c.Streams[name]
	var errs []fieldErr
	def := logic.StreamDef{Time: sc.Time, ID: sc.ID, Fields: map[string]logic.FieldType{},
		Required: sc.Required, PII: map[string]logic.PIIMode{}, AllowedLateness: sc.AllowedLateness.D(),
		MaxFuture: sc.MaxFuture.D(), Strict: sc.Strict, DedupContent: sc.Dedup == "content", MaxValueBytes: sc.MaxValueBytes}
	if sc.Time == "" {
		errs = append(errs, fieldErr{"time", "the event-time field is required", "name a field of type time"})
	}
	if len(sc.Fields) == 0 {
		errs = append(errs, fieldErr{"fields", "no fields", "e.g. fields: { ts: time, amount: float }"})
	}
	for _, f := range sortedKeys(sc.Fields) {
		if !nameRe.MatchString(f) {
			errs = append(errs, fieldErr{"fields." + f, "bad field name", "lowercase letters, digits and _"})
			continue
		}
		t, err := logic.ParseFieldType(sc.Fields[f])
		if err != nil {
			errs = append(errs, fieldErr{"fields." + f, err.Error(), ""})
			continue
		}
		def.Fields[f] = t
	}
	for _, f := range sortedKeys(sc.PII) {
		m, err := logic.ParsePIIMode(sc.PII[f])
		if err != nil {
			errs = append(errs, fieldErr{"pii." + f, err.Error(), ""})
			continue
		}
		def.PII[f] = m
	}
	if sc.Dedup != "" && sc.Dedup != "content" {
		errs = append(errs, fieldErr{"dedup", fmt.Sprintf("unknown dedup %q", sc.Dedup), `"" (by the id field) or content`})
	}
	if sc.AllowedLateness.D() < 0 {
		errs = append(errs, fieldErr{"allowed_lateness", "must not be negative", ""})
	}
	return def, errs
}

func viewDef(vc ViewConfig) logic.ViewDef {
	return logic.ViewDef{Stream: vc.Stream, Window: vc.Window.D(), Hop: vc.Hop.D(), GroupBy: vc.GroupBy, Where: vc.Where, Measures: vc.Measures}
}

// Catalog is the compiled streams and views of a valid configuration.
type Catalog struct {
	Streams     map[string]*logic.Stream
	Views       map[string]*logic.View
	ViewOrder   []string
	StreamOrder []string
}

// ViewsOf returns the views of a stream, in file order.
func (c *Catalog) ViewsOf(stream string) []*logic.View {
	var out []*logic.View
	for _, n := range c.ViewOrder {
		if v := c.Views[n]; v.Stream.Name == stream {
			out = append(out, v)
		}
	}
	return out
}

// Compile builds the catalog with the real PII key.
func (c *Config) Compile(piiKey []byte) (*Catalog, error) {
	cat := &Catalog{Streams: map[string]*logic.Stream{}, Views: map[string]*logic.View{}, ViewOrder: c.Views.Names}
	for _, name := range sortedKeys(c.Streams) {
		def, errs := c.streamDef(name)
		if len(errs) > 0 {
			return nil, fmt.Errorf("stream %s: %s", name, errs[0].Msg)
		}
		s, err := logic.NewStream(name, def, piiKey)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		cat.Streams[name] = s
		cat.StreamOrder = append(cat.StreamOrder, name)
	}
	for _, name := range c.Views.Names {
		vc := c.Views.ByName[name]
		v, err := logic.NewView(name, viewDef(vc), cat.Streams[vc.Stream])
		if err != nil {
			return nil, fmt.Errorf("view %s: %w", name, err)
		}
		cat.Views[name] = v
	}
	return cat, nil
}

// ErrorAt is a validation error about key, with its line in the file.
func (c *Config) ErrorAt(key, msg, hint string) Error {
	return Error{Key: key, Line: c.lineOf(key), Msg: msg, Hint: hint}
}

// FieldTypes returns the declared fields of a stream whose types are valid
// (nil when the stream is not declared).
func (c *Config) FieldTypes(stream string) map[string]logic.FieldType {
	if _, ok := c.Streams[stream]; !ok {
		return nil
	}
	def, _ := c.streamDef(stream)
	return def.Fields
}

// lineOf finds the line of a dotted key in the file, or of its closest
// existing parent.
func (c *Config) lineOf(key string) int {
	if c.root == nil {
		return 0
	}
	n := c.root
	line := 0
	for _, part := range strings.Split(key, ".") {
		if i := strings.IndexByte(part, '['); i >= 0 {
			idx, _ := strconv.Atoi(strings.TrimSuffix(part[i+1:], "]"))
			part = part[:i]
			next := child(n, part)
			if next == nil {
				return line
			}
			line = next.Line
			if next.Kind == yaml.SequenceNode && idx < len(next.Content) {
				n = next.Content[idx]
				line = n.Line
				continue
			}
			return line
		}
		next := child(n, part)
		if next == nil {
			return line
		}
		n = next
		line = n.Line
	}
	return line
}

func child(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// viewErrKey names the key of a view that an error from logic.NewView is about.
func viewErrKey(msg string) string {
	for _, k := range []string{"where", "group_by", "hop", "measure"} {
		if strings.HasPrefix(msg, k) {
			if k == "measure" {
				return "measures"
			}
			return k
		}
	}
	return "window"
}
