// Package config reads Braid's YAML configuration: the documented fields,
// their defaults (Default), environment overrides (BRAID_<SECTION>_<KEY>) and
// validation that names the key and line of every error. It compiles the
// streams and views into logic types.
package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
)

// Config is the whole configuration file.
type Config struct {
	DataDir   string   `yaml:"data_dir"`  // lake, embedded NATS store, batch views
	Namespace string   `yaml:"namespace"` // prefix of NATS streams/subjects and Redis keys
	HTTP      HTTP     `yaml:"http"`
	NATS      NATS     `yaml:"nats"`
	Redis     Redis    `yaml:"redis"`
	Storage   Storage  `yaml:"storage"` // where the lake and batch view versions live
	Epoch     Duration `yaml:"epoch"`   // arrival-epoch length for the batch/speed split
	Batch     Batch    `yaml:"batch"`
	Speed     Speed    `yaml:"speed"`
	Archive   Archive  `yaml:"archive"`
	DLQ       DLQ      `yaml:"dlq"`
	Auth      Auth     `yaml:"auth"`
	PIIKeyEnv string   `yaml:"pii_key_env"` // env var holding the PII HMAC key; else (braid up only) a key kept in data_dir, see PIIKey
	// MemoryLimit is the soft limit of each braid process's Go memory
	// (heap and stacks, the embedded nats-server's included), in bytes:
	// the collector works harder near it instead of letting the heap grow
	// to twice the live data. 0: no limit. GOMEMLIMIT, when set, wins.
	MemoryLimit int64 `yaml:"memory_limit"`

	Streams map[string]StreamConfig `yaml:"streams"`
	Views   Views                   `yaml:"views"`
	// Acting on data: alerts over views, per-key entity features, and
	// decision rules at ingest.
	Alerts   map[string]AlertConfig  `yaml:"alerts"`
	Entities map[string]EntityConfig `yaml:"entities"`
	Rules    map[string]RuleConfig   `yaml:"rules"`

	root *yaml.Node
}

// HTTP configures the API server.
type HTTP struct {
	Addr         string `yaml:"addr"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"` // larger ingest bodies, as sent or decoded, get 413
	MaxInFlight  int    `yaml:"max_in_flight"`  // concurrent ingest requests storing their events before 429
	// IngestMemoryBytes bounds the memory of the ingest bodies being read
	// and stored, all requests together (decoded bytes): beyond it ingest
	// answers 429. 0: four times MaxBodyBytes (IngestMemory); else at
	// least MaxBodyBytes.
	IngestMemoryBytes int64 `yaml:"ingest_memory_bytes"`
	// ReadTimeout is the longest a request may take to send its body once
	// its headers are in (then 408).
	ReadTimeout Duration `yaml:"read_timeout"`
	// IdleTimeout closes a keep-alive connection that has sent no request
	// for this long.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// QueryCacheBytes bounds the memory kept for answering queries again:
	// encoded answers and the final windows' encoded rows (0: no cache).
	QueryCacheBytes int64 `yaml:"query_cache_bytes"`
	// QueryMaxCells bounds the speed cells and batch rows one answer reads
	// and merges, QueryMaxRows the rows of one answer (before order and
	// limit): a query beyond either answers 422 naming it (0: no bound).
	QueryMaxCells int64 `yaml:"query_max_cells"`
	QueryMaxRows  int64 `yaml:"query_max_rows"`
}

// IngestMemory is the memory ingest bodies may hold together:
// IngestMemoryBytes, or four times MaxBodyBytes when it is 0.
func (h HTTP) IngestMemory() int64 {
	if h.IngestMemoryBytes > 0 {
		return h.IngestMemoryBytes
	}
	return defaults.HTTPIngestMemoryFactor * h.MaxBodyBytes
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
	// MaxAge is how long the log keeps clean events (0: forever). Braid
	// trims the log itself (the archiver): a record leaves it once it is
	// older than MaxAge and in the lake, never before it is archived.
	MaxAge Duration `yaml:"max_age"`
	// Limits of the clean log of each stream partition (0: none): a
	// stream of n partitions holds up to n times as much. The log refuses
	// new events beyond them (JetStream DiscardNew): ingest answers 429
	// with Retry-After instead of dropping old events.
	MaxMsgs  int64 `yaml:"max_msgs"`
	MaxBytes int64 `yaml:"max_bytes"`
}

// Redis configures the speed store.
type Redis struct {
	// URL is one server's URL, or with Cluster the comma-separated URLs of
	// some of the cluster's nodes (seeds). "" = a redis-server started by
	// braid, else an embedded dev server.
	URL string `yaml:"url"`
	// Cluster: the servers form a Redis Cluster (default false: one server).
	Cluster bool `yaml:"cluster"`
}

// Storage locates the object store holding the lake and the batch view
// versions: URL "" keeps them in files under data_dir; s3://bucket/prefix
// puts them on an S3-compatible server (Endpoint; "" is AWS S3, see
// S3Endpoint). The keys are read from the environment variables named by
// AccessKeyEnv and SecretKeyEnv, never from the file.
type Storage struct {
	URL          string `yaml:"url"`
	Endpoint     string `yaml:"endpoint"`
	Region       string `yaml:"region"`
	AccessKeyEnv string `yaml:"access_key_env"`
	SecretKeyEnv string `yaml:"secret_key_env"`
	// PathStyle addresses the bucket in the path (endpoint/bucket/key), as
	// most self-hosted servers need; false lets the client choose (host
	// style on AWS).
	PathStyle bool `yaml:"path_style"`
}

// IsS3 reports whether the lake lives on an S3-compatible server.
func (s Storage) IsS3() bool { return s.URL != "" }

// S3Endpoint is the endpoint to use: Endpoint, or AWS S3's for Region
// when it is empty (https://s3.amazonaws.com without a region).
func (s Storage) S3Endpoint() string {
	switch {
	case s.Endpoint != "":
		return s.Endpoint
	case s.Region != "":
		return "https://s3." + s.Region + ".amazonaws.com"
	}
	return "https://s3.amazonaws.com"
}

// Batch configures batch runs.
type Batch struct {
	Every        Duration `yaml:"every"` // 0 = on demand only
	KeepVersions int      `yaml:"keep_versions"`
	// SettleTimeout bounds how long an on-demand run waits for the lake to
	// cover what the log had acknowledged when it was asked for (0: no wait).
	SettleTimeout Duration `yaml:"settle_timeout"`
	// Workers is how many work units a process computes at once (braid
	// batch, braid up, braid serve, braid batch run); 0 keeps a process
	// from computing units (e.g. serving replicas, with BRAID_BATCH_WORKERS).
	Workers int `yaml:"workers"`
	// Threads is DuckDB's threads per unit being computed (0: DuckDB's
	// default, the machine's cores).
	Threads int `yaml:"threads"`
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
	// Compact merges, in the background, the small files of each lake
	// partition into files of about TargetFileBytes.
	Compact         bool `yaml:"compact"`
	TargetFileBytes Size `yaml:"target_file_bytes"`
	// UpkeepEvery is the period of the archiver's upkeep: log trimming,
	// compaction (when the lake took commits since) and sweeping.
	UpkeepEvery Duration `yaml:"upkeep_every"`
}

// DLQ configures the retention of dead letters and too-late records:
// by age, and by a budget of each stream's own (one stream's rejects
// never evict another's). The oldest go first. 0: no limit.
type DLQ struct {
	MaxAge Duration `yaml:"max_age"`
	// MaxRecords is each stream's budget of dead-letter records: a record
	// holds the dead letters of one write (an ingest request's rejects,
	// or several requests' arriving together), at most one NATS message.
	MaxRecords int64 `yaml:"max_records"`
	// MaxLate is each stream's budget of too-late records (one per event).
	MaxLate int64 `yaml:"max_late"`
	// MaxMsgs was one budget for the dead letters of all streams; it no
	// longer applies (a warning says so).
	MaxMsgs int64 `yaml:"max_msgs"`
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
	// Retention is how long the lake and the batch views keep the
	// stream's events, by event date (0: forever): whole days dated
	// before RetainedFrom are dropped.
	Retention Duration `yaml:"retention"`
	// Partitions splits the stream's log and speed state (default 1): a
	// JetStream stream per partition, each with its own leader in a
	// cluster and its own nats.max_msgs and nats.max_bytes. PartitionBy
	// names the field whose value picks an event's partition (default: the
	// event's id, else round robin). Partitions can only grow: a start
	// with fewer than the log has partitions holding records is refused.
	// See the README's "Running on many machines" for changing Partitions.
	Partitions  int    `yaml:"partitions"`
	PartitionBy string `yaml:"partition_by"`
}

// ViewConfig is one view as written in the file.
type ViewConfig struct {
	Stream   string   `yaml:"stream"`
	Window   Duration `yaml:"window"`
	Hop      Duration `yaml:"hop"`
	GroupBy  []string `yaml:"group_by"`
	Where    string   `yaml:"where"`
	Measures Measures `yaml:"measures"`
	Tier     string   `yaml:"tier"` // live (default) | batch: no speed state
}

// Views keeps the views in file order.
type Views struct {
	Names  []string
	ByName map[string]ViewConfig
}

// UnmarshalYAML keeps the order of the views. A view with a value of the
// wrong type is kept with what could be read, so that the rest of it is
// checked too; the type errors of every view are returned together.
func (v *Views) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return typeError(n.Line, "views: want a mapping of view names")
	}
	v.ByName = map[string]ViewConfig{}
	var terr yaml.TypeError
	for i := 0; i+1 < len(n.Content); i += 2 {
		var vc ViewConfig
		if err := n.Content[i+1].Decode(&vc); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return err
			}
			terr.Errors = append(terr.Errors, te.Errors...)
		}
		name := n.Content[i].Value
		v.Names = append(v.Names, name)
		v.ByName[name] = vc
	}
	if len(terr.Errors) > 0 {
		return &terr
	}
	return nil
}

// typeError is a value's error as the YAML decoder collects them: decoding
// goes on with the other values.
func typeError(line int, format string, args ...any) *yaml.TypeError {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", line) + fmt.Sprintf(format, args...)}}
}

// Measures keeps the measures in file order.
type Measures []logic.MeasureDef

// UnmarshalYAML keeps the order of the measures.
func (m *Measures) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return typeError(n.Line, "measures: want name: expression pairs")
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
	if n.Kind != yaml.ScalarNode {
		return typeError(n.Line, "want a duration, e.g. 10s, 5m, 1h, 1d")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return typeError(n.Line, "%v", err)
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

// Size is a number of bytes written as a number (134217728) or with a
// unit: 64MiB, 1GiB, 500MB, 2GB (KiB, MiB, GiB, TiB count in 1024s; KB,
// MB, GB, TB in 1000s; B is bytes).
type Size int64

// UnmarshalYAML reads a size.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n.Line, "want a size, e.g. 134217728, 128MiB, 1GB")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeError(n.Line, "%v", err)
	}
	*z = Size(v)
	return nil
}

var sizeRe = regexp.MustCompile(`^([0-9]+)\s*([KMGT]i?B|B)?$`)

// ParseSize reads "134217728", "128MiB", "64 MiB", "1GB" or "512B".
func ParseSize(s string) (int64, error) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("bad size %q (want a number of bytes or e.g. 64MiB, 1GB)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q: %w", s, err)
	}
	mult := int64(1)
	if u := m[2]; len(u) > 1 {
		base := int64(1000)
		if strings.Contains(u, "i") {
			base = 1024
		}
		for range strings.Index("KMGT", u[:1]) + 1 {
			mult *= base
		}
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q: too large", s)
	}
	return n * mult, nil
}

// MinMemoryLimit is the smallest memory_limit other than 0.
const MinMemoryLimit = 64 << 20

// Default returns the configuration every field falls back to, built from
// the package defaults (the values the components fall back to as well).
func Default() Config {
	return Config{
		DataDir:   defaults.DataDir,
		Namespace: defaults.Namespace,
		HTTP: HTTP{
			Addr:            defaults.HTTPAddr,
			MaxBodyBytes:    defaults.HTTPMaxBodyBytes,
			MaxInFlight:     defaults.HTTPMaxInFlight,
			ReadTimeout:     Duration(defaults.HTTPReadTimeout),
			IdleTimeout:     Duration(defaults.HTTPIdleTimeout),
			QueryCacheBytes: defaults.HTTPQueryCacheBytes,
			QueryMaxCells:   defaults.HTTPQueryMaxCells,
			QueryMaxRows:    defaults.HTTPQueryMaxRows,
		},
		NATS: NATS{
			Replicas:       defaults.NATSReplicas,
			DedupWindow:    Duration(defaults.NATSDedupWindow),
			PublishTimeout: Duration(defaults.NATSPublishTimeout),
		},
		Epoch: Duration(defaults.Epoch),
		Batch: Batch{
			Every:         Duration(defaults.BatchEvery),
			KeepVersions:  defaults.BatchKeepVersions,
			SettleTimeout: Duration(defaults.BatchSettleTimeout),
			Workers:       defaults.BatchWorkers,
		},
		Speed: Speed{
			BatchSize: defaults.SpeedBatchSize,
			MaxWait:   Duration(defaults.SpeedMaxWait),
			MaxCells:  defaults.SpeedMaxCells,
		},
		Archive: Archive{
			MaxRows:  defaults.ArchiveMaxRows,
			MaxBytes: defaults.ArchiveMaxBytes,
			MaxDelay: Duration(defaults.ArchiveMaxDelay),

			Compact:         defaults.ArchiveCompact,
			TargetFileBytes: defaults.ArchiveTargetFileBytes,
			UpkeepEvery:     Duration(defaults.ArchiveUpkeepEvery),
		},
		Storage: Storage{
			AccessKeyEnv: defaults.StorageAccessKeyEnv,
			SecretKeyEnv: defaults.StorageSecretKeyEnv,
		},
		DLQ: DLQ{
			MaxAge:     Duration(defaults.DLQMaxAge),
			MaxRecords: defaults.DLQMaxRecords,
			MaxLate:    defaults.DLQMaxLate,
		},
		PIIKeyEnv:   defaults.PIIKeyEnv,
		MemoryLimit: defaults.MemoryLimit,
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
// it further and report every error at once: unknown and repeated keys,
// values of the wrong type (the configuration keeps the default there),
// bad environment overrides and every validation error, each at its key.
func Inspect(data []byte, getenv func(string) string) (*Config, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Errors{List: []Error{{Key: "", Line: yamlLine(err), Msg: err.Error(), Hint: "check the YAML syntax"}}}
	}
	var list []Error
	badValues := map[string]bool{} // keys whose value could not be read
	if len(root.Content) > 0 {
		doc := root.Content[0]
		list = dropRepeatedKeys(doc, "")
		found := checkNodes(doc, reflect.TypeOf(cfg), "")
		for _, e := range found {
			if e.Msg != unknownKey {
				badValues[e.Key] = true
			}
		}
		list = append(list, found...)
		if err := doc.Decode(&cfg); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, &Errors{List: []Error{{Line: yamlLine(err), Msg: lineRe.ReplaceAllString(err.Error(), ""), Hint: "check the value's type"}}}
			}
			list = append(list, unplaced(te, list)...)
		}
		cfg.root = doc
	}
	if getenv != nil {
		if err := applyEnv(&cfg, getenv); err != nil {
			list = append(list, err.List...)
		}
	}
	if err := cfg.Validate(); err != nil {
		var verrs *Errors
		if !errors.As(err, &verrs) {
			return &cfg, err
		}
		// A value that could not be read kept its default: what validation
		// says about that key is not news.
		for _, e := range verrs.List {
			if !underAny(e.Key, badValues) {
				list = append(list, e)
			}
		}
	}
	if len(list) > 0 {
		SortByLine(list)
		return &cfg, &Errors{List: list}
	}
	return &cfg, nil
}

// SortByLine puts errors in the order of their lines in the file, keeping
// the order of errors on one line; errors of no line (a missing section,
// an environment override) come last.
func SortByLine(list []Error) {
	slices.SortStableFunc(list, func(a, b Error) int {
		switch {
		case a.Line == b.Line:
			return 0
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		}
		return a.Line - b.Line
	})
}

const unknownKey = "unknown key"

// underAny reports whether key is one of keys or under one of them.
func underAny(key string, keys map[string]bool) bool {
	for k := range keys {
		if key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[") {
			return true
		}
	}
	return false
}

// unplaced turns the decoder's type errors that no error of found is at the
// line of into errors of their own (checkNodes places them all, with their
// key; this keeps any it might miss).
func unplaced(te *yaml.TypeError, found []Error) []Error {
	lines := map[int]bool{}
	for _, e := range found {
		lines[e.Line] = true
	}
	var out []Error
	for _, m := range te.Errors {
		if line := yamlLine(errors.New(m)); !lines[line] {
			out = append(out, Error{Line: line, Msg: lineRe.ReplaceAllString(m, ""), Hint: "check the value's type"})
		}
	}
	return out
}

// dropRepeatedKeys reports every key repeated in a mapping of the document
// and removes the repetitions, so that the first one is read and the rest
// of the document is checked as usual.
func dropRepeatedKeys(n *yaml.Node, path string) []Error {
	var out []Error
	switch n.Kind {
	case yaml.MappingNode:
		seen := map[string]int{}
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if line, dup := seen[k.Value]; dup {
				out = append(out, Error{Key: join(path, k.Value), Line: k.Line, Msg: fmt.Sprintf("repeated key (first at line %d)", line), Hint: "keep one of them"})
				continue
			}
			seen[k.Value] = k.Line
			out = append(out, dropRepeatedKeys(v, join(path, k.Value))...)
			kept = append(kept, k, v)
		}
		n.Content = kept
	case yaml.SequenceNode:
		for i, c := range n.Content {
			out = append(out, dropRepeatedKeys(c, fmt.Sprintf("%s[%d]", path, i))...)
		}
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out = append(out, dropRepeatedKeys(c, path)...)
		}
	}
	return out
}

// checkNodes lists, in file order, every key of the document that no field
// of t declares and every value that cannot be read as its field's type,
// each with its key and line, so that a typo or a bad value is reported
// together with every other error.
func checkNodes(n *yaml.Node, t reflect.Type, path string) []Error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []Error
	switch {
	case t == reflect.TypeOf(Views{}) && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			out = append(out, checkNodes(n.Content[i+1], reflect.TypeOf(ViewConfig{}), join(path, n.Content[i].Value))...)
		}
	case t == reflect.TypeOf(Measures{}) && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind != yaml.ScalarNode {
				out = append(out, Error{Key: join(path, n.Content[i].Value), Line: v.Line, Msg: "want an expression", Hint: "e.g. total: sum(amount)"})
			}
		}
	case t == reflect.TypeOf(Features{}):
		acting, _ := checkActingNodes(n, t, path)
		out = append(out, acting...)
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
				out = append(out, Error{Key: join(path, k.Value), Line: k.Line, Msg: unknownKey, Hint: "see configs/demo.yaml for the known keys"})
				continue
			}
			out = append(out, checkNodes(n.Content[i+1], ft, join(path, k.Value))...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			out = append(out, checkNodes(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			out = append(out, checkNodes(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	default:
		// A scalar, or a node of the wrong kind: read it alone.
		err := n.Decode(reflect.New(t).Interface())
		if err == nil {
			break
		}
		hint := "check the value's type"
		switch t {
		case reflect.TypeOf(Duration(0)):
			hint = ""
		case reflect.TypeOf(Size(0)):
			hint = "a number of bytes, or a size such as 64MiB or 1GB"
		}
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return append(out, Error{Key: path, Line: n.Line, Msg: err.Error(), Hint: hint})
		}
		for _, m := range te.Errors {
			out = append(out, Error{Key: path, Line: n.Line, Msg: lineRe.ReplaceAllString(m, ""), Hint: hint})
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
func applyEnv(cfg *Config, getenv func(string) string) *Errors {
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
	case fv.Type() == reflect.TypeOf(Size(0)):
		n, err := ParseSize(val)
		if err != nil {
			return err
		}
		fv.SetInt(n)
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

// Warnings lists settings that are valid but probably not what was meant;
// commands log them at start.
func (c *Config) Warnings() []string {
	var out []string
	if (c.NATS.MaxMsgs > 0 || c.NATS.MaxBytes > 0) && c.NATS.MaxAge.D() == 0 {
		out = append(out, "nats.max_msgs or nats.max_bytes is set without nats.max_age: nothing ever leaves a full log, so once it is full ingest answers 429 until it is purged; set nats.max_age too")
	}
	if !c.Storage.IsS3() && (c.Storage.Endpoint != "" || c.Storage.Region != "" || c.Storage.PathStyle) {
		out = append(out, "storage.endpoint, storage.region or storage.path_style is set but storage.url is empty: the lake and batch views stay in files under data_dir; set storage.url (s3://bucket/prefix) to use the object store")
	}
	if r := c.NATS.Replicas; r == 2 || r == 4 {
		out = append(out, fmt.Sprintf("nats.replicas is %d: a stream stays writable while a majority of its replicas is up, so %d replicas survive no more lost nodes than %d; use 3 or 5", r, r, r-1))
	}
	for _, name := range sortedKeys(c.Streams) {
		if sc := c.Streams[name]; sc.PartitionBy != "" && sc.Partitions <= 1 {
			out = append(out, fmt.Sprintf("streams.%s.partition_by is set but the stream has one partition (streams.%s.partitions): it picks nothing", name, name))
		}
	}
	if c.DLQ.MaxMsgs != 0 {
		out = append(out, "dlq.max_msgs no longer applies: each stream has a budget of its own, dlq.max_records (dead-letter records, each holding the dead letters of one write) and dlq.max_late (too-late records); remove dlq.max_msgs")
	}
	if st := c.Batch.SettleTimeout.D(); st > 0 && st < c.Epoch.D()+c.Archive.MaxDelay.D() {
		out = append(out, fmt.Sprintf("batch.settle_timeout %v is shorter than epoch + archive.max_delay (%v): on-demand batch runs will often stop waiting before they cover what was acknowledged", st, c.Epoch.D()+c.Archive.MaxDelay.D()))
	}
	return out
}

type fieldErr struct{ Key, Msg, Hint string }

func (c *Config) streamDef(name string) (logic.StreamDef, []fieldErr) {
	sc := c.Streams[name]
	var errs []fieldErr
	def := logic.StreamDef{Time: sc.Time, ID: sc.ID, Fields: map[string]logic.FieldType{},
		Required: sc.Required, PII: map[string]logic.PIIMode{}, AllowedLateness: sc.AllowedLateness.D(),
		MaxFuture: sc.MaxFuture.D(), Strict: sc.Strict, DedupContent: sc.Dedup == "content", MaxValueBytes: sc.MaxValueBytes,
		Partitions: sc.Partitions, PartitionBy: sc.PartitionBy}
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
	if f := sc.PartitionBy; f != "" && sc.PII[f] == "redact" {
		errs = append(errs, fieldErr{"partition_by", fmt.Sprintf("partition_by field %q is redacted (pii: redact): every event would go to one partition", f),
			"partition by another field, or hash this one (pii: hash)"})
	}
	switch r := sc.Retention.D(); {
	case r == 0:
	case r < defaults.StreamMinRetention:
		errs = append(errs, fieldErr{"retention", "must be 0 (for ever) or at least 1d: the lake drops whole days", "0 keeps every day, e.g. 400d"})
	case r < sc.AllowedLateness.D():
		errs = append(errs, fieldErr{"retention",
			fmt.Sprintf("must be at least allowed_lateness (%s): events the speed layer still takes would be dropped from the lake", formatDuration(sc.AllowedLateness.D())),
			"raise retention or lower allowed_lateness"})
	}
	return def, errs
}

func viewDef(vc ViewConfig) logic.ViewDef {
	return logic.ViewDef{Stream: vc.Stream, Window: vc.Window.D(), Hop: vc.Hop.D(), GroupBy: vc.GroupBy, Where: vc.Where, Measures: vc.Measures, Tier: vc.Tier}
}

// Catalog is the compiled streams and views of a valid configuration.
type Catalog struct {
	Streams     map[string]*logic.Stream
	Views       map[string]*logic.View
	ViewOrder   []string
	StreamOrder []string
	Entities    map[string]*logic.Entity
	Alerts      map[string]*logic.Alert
	AlertOrder  []string
	Rules       map[string][]*logic.Rule // by stream, in name order
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

// SpeedViewsOf returns the views of a stream that keep speed state (tier
// live), in file order: the views the speed layer folds. A batch-tier view
// keeps none: it answers from the batch layer alone.
func (c *Catalog) SpeedViewsOf(stream string) []*logic.View {
	var out []*logic.View
	for _, v := range c.ViewsOf(stream) {
		if v.Tier == logic.TierLive {
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
	if err := c.compileActing(cat); err != nil {
		return nil, err
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

// inEvery returns the errors of the first set that every other set has
// too (the same key and message), in order.
func inEvery(sets [][]logic.DefError) []logic.DefError {
	if len(sets) == 0 {
		return nil
	}
	var out []logic.DefError
	for _, e := range sets[0] {
		all := true
		for _, set := range sets[1:] {
			if !slices.ContainsFunc(set, func(o logic.DefError) bool { return o.Key == e.Key && o.Error() == e.Error() }) {
				all = false
				break
			}
		}
		if all {
			out = append(out, e)
		}
	}
	return out
}
