package config

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
)

// issue is a validation error found by a section, at its full key, before
// the key's line in the file is known.
type issue struct{ key, hint, msg string }

// issues collects a section's validation errors.
type issues []issue

func (is *issues) add(key, hint, format string, args ...any) {
	*is = append(*is, issue{key: key, hint: hint, msg: fmt.Sprintf(format, args...)})
}

// Validate checks every field and compiles every stream and view, collecting
// all errors: each section is checked by its own method, in the order below
// (errors on one line of the file keep that order).
func (c *Config) Validate() error {
	var errs []Error
	place := func(is issues) {
		for _, i := range is {
			errs = append(errs, Error{Key: i.key, Line: c.lineOf(i.key), Msg: i.msg, Hint: i.hint})
		}
	}
	place(c.validateTop())
	place(c.Batch.validate(c.Epoch.D()))
	place(c.Speed.validate())
	place(c.Archive.validate())
	place(c.NATS.validate())
	place(c.Storage.validate())
	place(c.Redis.validate())
	place(c.validateLogAge())
	place(c.DLQ.validate())
	place(c.HTTP.validate())
	place(c.validateMemory())
	place(c.Auth.validate())
	streams, is := c.validateStreams()
	place(is)
	place(c.validateViews(streams))
	place(c.validateActing(streams))
	if len(errs) > 0 {
		return &Errors{List: errs}
	}
	return nil
}

var namespaceRe = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,30}$`)

// validateTop checks data_dir, namespace and epoch.
func (c *Config) validateTop() issues {
	var is issues
	if c.DataDir == "" {
		is.add("data_dir", "a directory for the lake and batch views", "must not be empty")
	}
	if !namespaceRe.MatchString(c.Namespace) {
		is.add("namespace", "lowercase letters, digits, - and _", "bad namespace %q", c.Namespace)
	}
	if c.Epoch.D() < time.Second || c.Epoch.D() > time.Hour || c.Epoch.D()%time.Second != 0 {
		is.add("epoch", eg(defaults.Epoch), "must be whole seconds between 1s and 1h")
	}
	return is
}

// validate checks the batch section; a run covers whole epochs.
func (b Batch) validate(epoch time.Duration) issues {
	var is issues
	if b.Every.D() != 0 && b.Every.D() < epoch {
		is.add("batch.every", "a batch run covers whole epochs", "must be 0 (on demand) or at least the epoch")
	}
	if b.KeepVersions < 1 {
		is.add("batch.keep_versions", "keep at least the current version", "must be at least 1")
	}
	if b.SettleTimeout.D() < 0 || b.SettleTimeout.D() > time.Hour {
		is.add("batch.settle_timeout", eg(defaults.BatchSettleTimeout)+"; 0 takes what the lake covers without waiting", "must be between 0 and 1h")
	}
	if b.Workers < 0 || b.Workers > 256 {
		is.add("batch.workers", eg(defaults.BatchWorkers)+"; 0 computes no work units in this process", "must be in 0..256")
	}
	if b.Threads < 0 || b.Threads > 1024 {
		is.add("batch.threads", "0 (DuckDB's default: every core) or a number of threads", "must be in 0..1024")
	}
	return is
}

// validate checks the speed section.
func (s Speed) validate() issues {
	var is issues
	if s.BatchSize < 1 || s.BatchSize > 100000 {
		is.add("speed.batch_size", eg(defaults.SpeedBatchSize), "must be in 1..100000")
	}
	if s.MaxWait.D() <= 0 {
		is.add("speed.max_wait", eg(defaults.SpeedMaxWait), "must be positive")
	}
	if s.MaxCells < 1 {
		is.add("speed.max_cells", eg(defaults.SpeedMaxCells), "must be positive")
	}
	return is
}

// validate checks the archive section.
func (a Archive) validate() issues {
	var is issues
	if a.MaxRows < 1 {
		is.add("archive.max_rows", eg(defaults.ArchiveMaxRows), "must be positive")
	}
	if a.MaxBytes < 1<<20 {
		is.add("archive.max_bytes", egMiB(defaults.ArchiveMaxBytes), "must be at least 1048576 (1 MiB)")
	}
	if a.MaxDelay.D() <= 0 {
		is.add("archive.max_delay", eg(defaults.ArchiveMaxDelay), "must be positive")
	}
	if a.TargetFileBytes < 1<<20 {
		is.add("archive.target_file_bytes", egMiB(defaults.ArchiveTargetFileBytes)+", or 128MiB", "must be at least 1048576 (1 MiB)")
	}
	if d := a.UpkeepEvery.D(); d < 100*time.Millisecond || d > 24*time.Hour {
		is.add("archive.upkeep_every", eg(defaults.ArchiveUpkeepEvery), "must be between 100ms and 24h")
	}
	return is
}

var (
	bucketRe = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	envRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// validate checks the redis section: one server's URL ("" lets `braid
// up` start one), or with cluster the URLs of some of the cluster's nodes,
// separated by commas, each redis:// or rediss:// with a host and port and
// no database but 0 (a cluster has only database 0).
func (r Redis) validate() issues {
	var is issues
	const clusterHint = `redis://host:port of some of the cluster's nodes, separated by commas: "redis://10.0.0.1:7000,redis://10.0.0.2:7000"`
	seeds := strings.Split(r.URL, ",")
	switch {
	case !r.Cluster && len(seeds) > 1:
		is.add("redis.url", "one server's URL; set redis.cluster: true for the nodes of a Redis Cluster", "%d URLs for one server", len(seeds))
	case r.Cluster && strings.TrimSpace(r.URL) == "":
		is.add("redis.cluster", clusterHint+" in redis.url", "a Redis Cluster needs redis.url")
	case r.Cluster:
		for _, s := range seeds {
			u, err := url.Parse(strings.TrimSpace(s))
			switch {
			case err != nil:
				is.add("redis.url", clusterHint, "cannot read %q: %v", s, err)
			case u.Scheme != "redis" && u.Scheme != "rediss":
				is.add("redis.url", clusterHint, "%q: a cluster node's URL is redis:// or rediss://", s)
			case u.Hostname() == "" || u.Port() == "":
				is.add("redis.url", clusterHint, "%q: a cluster node's URL needs a host and a port", s)
			case u.Path != "" && u.Path != "/" && u.Path != "/0":
				is.add("redis.url", clusterHint, "%q: a Redis Cluster has only database 0", s)
			default:
				continue
			}
			break
		}
	}
	return is
}

// validate checks the storage section: "" (files under data_dir) or
// s3://bucket/prefix, an http(s) endpoint (or none: AWS S3) and the names
// of the variables holding the keys.
func (s Storage) validate() issues {
	var is issues
	if s.URL == "" {
		return is
	}
	const urlHint = `s3://bucket/prefix (the prefix is optional), or "" for files under data_dir`
	u, err := url.Parse(s.URL)
	switch {
	case err != nil:
		is.add("storage.url", urlHint, "cannot read %q: %v", s.URL, err)
	case u.Scheme != "s3":
		is.add("storage.url", urlHint, "unknown scheme in %q: only s3:// is known", s.URL)
	case !bucketRe.MatchString(u.Host) || strings.Contains(u.Host, ".."):
		is.add("storage.url", "a bucket name: 3 to 63 lowercase letters, digits, . and -", "bad bucket %q in %q", u.Host, s.URL)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		is.add("storage.url", urlHint+"; the endpoint and keys have keys of their own", "%q: only a bucket and a prefix (no user, port, query or fragment)", s.URL)
	default:
		if p := strings.Trim(u.Path, "/"); p != "" {
			for _, seg := range strings.Split(p, "/") {
				if seg == "" || seg == "." || seg == ".." || strings.ContainsFunc(seg, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
					is.add("storage.url", "a prefix of /-separated names, none empty, . or ..", "bad prefix %q in %q", p, s.URL)
					break
				}
			}
		}
	}
	if s.Endpoint != "" {
		e, err := url.Parse(s.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || strings.Trim(e.Path, "/") != "" || e.RawQuery != "" || e.User != nil {
			is.add("storage.endpoint", `the server's URL, e.g. "http://127.0.0.1:9000" or "https://s3.example.com"; "" for AWS S3`, "must be an http:// or https:// URL of a host (no path), got %q", s.Endpoint)
		}
	}
	for _, k := range []struct{ key, name, def string }{
		{"storage.access_key_env", s.AccessKeyEnv, defaults.StorageAccessKeyEnv},
		{"storage.secret_key_env", s.SecretKeyEnv, defaults.StorageSecretKeyEnv},
	} {
		if !envRe.MatchString(k.name) {
			is.add(k.key, "the name of an environment variable holding the key, e.g. "+k.def, "bad variable name %q", k.name)
		}
	}
	return is
}

// validateLogAge is the log's half of the retention interlock. The
// archiver trims the log (nats.max_age) only of records in the lake, so
// nothing unarchived ever leaves it; but the speed layer, when it
// rebuilds, refolds the log from the last batch run's cutoff, which may
// be two batch intervals behind (one between runs, one while a run
// computes), plus an epoch and archive.max_delay (the cutoff waits for
// the lake to cover its epoch). A log that keeps less would rebuild the
// speed layer without events the batch views do not hold yet. On-demand
// runs (batch.every 0) have no interval: the log must then keep its
// records for ever, or at least a day (and runs must come more often
// than the hint says). In every case it keeps at least nats.dedup_window,
// whose ids the writer reads from the log.
func (c *Config) validateLogAge() issues {
	var is issues
	age := c.NATS.MaxAge.D()
	switch {
	case age < 0:
		is.add("nats.max_age", "0 keeps the log for ever", "must not be negative")
	case age == 0:
	case age < c.NATS.DedupWindow.D():
		is.add("nats.max_age", "the writer reads the ids of the last nats.dedup_window from the log, to store a repeated id once", "must be 0 (for ever) or at least nats.dedup_window (%s)", shortDuration(c.NATS.DedupWindow.D()))
	case c.Batch.Every.D() == 0:
		if age < 24*time.Hour {
			is.add("nats.max_age", "with on-demand batch runs only (batch.every 0) the log must hold what the speed layer may refold since the last run: keep it for ever (0) or at least 1d, and run a batch at least every (max_age - epoch - archive.max_delay) / 2",
				"must be 0 or at least 1d when batch.every is 0")
		}
	default:
		need := 2*c.Batch.Every.D() + c.Epoch.D() + c.Archive.MaxDelay.D()
		if age < need {
			is.add("nats.max_age", fmt.Sprintf("the log must hold what the speed layer may have to refold since the last batch run: two batch.every (%s), an epoch (%s) and archive.max_delay (%s); raise nats.max_age or run batches more often",
				formatDuration(c.Batch.Every.D()), formatDuration(c.Epoch.D()), formatDuration(c.Archive.MaxDelay.D())),
				"must be 0 (for ever) or at least 2 × batch.every + epoch + archive.max_delay (%s)", shortDuration(need))
		}
	}
	return is
}

// validate checks the nats section.
func (n NATS) validate() issues {
	var is issues
	if n.DedupWindow.D() <= 0 {
		is.add("nats.dedup_window", eg(defaults.NATSDedupWindow), "must be positive")
	}
	if n.PublishTimeout.D() <= 0 {
		is.add("nats.publish_timeout", eg(defaults.NATSPublishTimeout), "must be positive")
	}
	switch {
	case n.Replicas < 1 || n.Replicas > 5:
		is.add("nats.replicas", "1 for one server, 3 for a cluster", "must be in 1..5")
	case n.Replicas > 1 && n.URL == "":
		is.add("nats.replicas", "the embedded server (nats.url empty) is one server: keep 1, or set nats.url to a cluster's servers (nats://n1:4222,nats://n2:4222,nats://n3:4222)",
			"must be 1 without nats.url")
	}
	if n.MaxMsgs < 0 {
		is.add("nats.max_msgs", "0 for no limit, e.g. 50000000", "must not be negative")
	}
	if (n.TLSCert == "") != (n.TLSKey == "") {
		is.add("nats.tls_cert", "set nats.tls_cert and nats.tls_key together", "a client certificate needs its key, and a key its certificate")
	}
	if n.MaxBytes < 0 || (n.MaxBytes > 0 && n.MaxBytes < 1<<20) {
		is.add("nats.max_bytes", "0 for no limit, e.g. 10737418240 (10 GiB)", "must be 0 or at least 1048576 (one NATS message)")
	}
	return is
}

// validate checks the dlq section.
func (d DLQ) validate() issues {
	var is issues
	if d.MaxRecords < 0 {
		is.add("dlq.max_records", "0 for no limit, "+eg(defaults.DLQMaxRecords), "must not be negative")
	}
	if d.MaxLate < 0 {
		is.add("dlq.max_late", "0 for no limit, "+eg(defaults.DLQMaxLate), "must not be negative")
	}
	return is
}

// validate checks the http section.
func (h HTTP) validate() issues {
	var is issues
	if h.MaxBodyBytes < 1024 {
		is.add("http.max_body_bytes", eg(defaults.HTTPMaxBodyBytes), "must be at least 1024")
	}
	if h.MaxInFlight < 1 {
		is.add("http.max_in_flight", eg(defaults.HTTPMaxInFlight), "must be positive")
	}
	if m := h.IngestMemoryBytes; m < 0 || (m > 0 && m < h.MaxBodyBytes) {
		is.add("http.ingest_memory_bytes", egMiB(defaults.HTTPIngestMemoryFactor*defaults.HTTPMaxBodyBytes)+", or 0 for four times http.max_body_bytes",
			"must be 0 or at least http.max_body_bytes (%d)", h.MaxBodyBytes)
	}
	if h.ReadTimeout.D() <= 0 {
		is.add("http.read_timeout", eg(defaults.HTTPReadTimeout), "must be positive")
	}
	if h.IdleTimeout.D() <= 0 {
		is.add("http.idle_timeout", eg(defaults.HTTPIdleTimeout), "must be positive")
	}
	if h.QueryCacheBytes < 0 {
		is.add("http.query_cache_bytes", eg(defaults.HTTPQueryCacheBytes)+", or 0 for no cache", "must not be negative")
	}
	if h.QueryMaxCells < 0 {
		is.add("http.query_max_cells", eg(defaults.HTTPQueryMaxCells)+", or 0 for no bound", "must not be negative")
	}
	if h.QueryMaxRows < 0 {
		is.add("http.query_max_rows", eg(defaults.HTTPQueryMaxRows)+", or 0 for no bound", "must not be negative")
	}
	return is
}

// validateMemory checks memory_limit against the buffers it must hold
// (archive.max_bytes and http.query_cache_bytes).
func (c *Config) validateMemory() issues {
	var is issues
	switch buffers := c.Archive.MaxBytes + c.HTTP.QueryCacheBytes; {
	case c.MemoryLimit < 0 || (c.MemoryLimit > 0 && c.MemoryLimit < MinMemoryLimit):
		is.add("memory_limit", egMiB(defaults.MemoryLimit)+", or 0 for no limit", "must be 0 or at least %d (64 MiB)", MinMemoryLimit)
	case c.MemoryLimit > 0 && c.MemoryLimit < 2*buffers:
		is.add("memory_limit", "raise it, or lower archive.max_bytes and http.query_cache_bytes",
			"must be at least twice archive.max_bytes + http.query_cache_bytes (%d)", 2*buffers)
	}
	return is
}

var sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)

// validate checks the API keys.
func (a Auth) validate() issues {
	var is issues
	for i, k := range a.Keys {
		key := fmt.Sprintf("auth.keys[%d]", i)
		if k.Name == "" {
			is.add(key+".name", "", "a key needs a name")
		}
		if (k.TokenEnv == "") == (k.SHA256 == "") {
			is.add(key, "set token_env or sha256", "a key needs exactly one of token_env and sha256")
		}
		if k.SHA256 != "" && !sha256Re.MatchString(k.SHA256) {
			is.add(key+".sha256", "sha256sum of the token, 64 hex digits", "bad hash")
		}
		for _, s := range k.Scopes {
			if !validScope(s) {
				is.add(key+".scopes", "admin, ingest:<stream>, read:<view pattern>", "unknown scope %q", s)
			}
		}
	}
	return is
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

// validateStreams checks and compiles every stream. Each stream is checked
// whole, even when it has errors: a mistake never hides another one. A
// field whose type cannot be read may have been meant as any type, so the
// stream is checked once per type it could have, and only what is wrong
// whatever that type is gets reported. It returns the compiled streams by
// name (one per type tried) for validateViews.
func (c *Config) validateStreams() (map[string][]*logic.Stream, issues) {
	var is issues
	if len(c.Streams) == 0 {
		is.add("streams", "declare at least one stream", "no streams")
	}
	checked := map[string][]*logic.Stream{}
	for _, name := range sortedKeys(c.Streams) {
		key := "streams." + name
		if !nameRe.MatchString(name) {
			is.add(key, "lowercase letters, digits and _", "bad stream name")
			continue
		}
		def, fieldErrs := c.streamDef(name)
		for _, fe := range fieldErrs {
			is.add(key+"."+fe.Key, fe.Hint, "%s", fe.Msg)
		}
		var untyped []string
		for _, f := range sortedKeys(c.Streams[name].Fields) {
			if _, ok := def.Fields[f]; !ok {
				untyped = append(untyped, f)
			}
		}
		defs := []logic.StreamDef{def}
		if len(untyped) > 0 {
			defs = nil
			for _, t := range []logic.FieldType{logic.TypeString, logic.TypeInt, logic.TypeFloat, logic.TypeBool, logic.TypeTime} {
				d := def
				d.Fields = maps.Clone(def.Fields)
				for _, f := range untyped {
					d.Fields[f] = t
				}
				defs = append(defs, d)
			}
		}
		var sets [][]logic.DefError
		for _, d := range defs {
			s, errs := logic.CheckStream(name, d)
			checked[name] = append(checked[name], s)
			sets = append(sets, errs)
		}
		for _, e := range inEvery(sets) {
			is.add(key+"."+e.Key, streamHints[e.Key], "%v", e.Err)
		}
	}
	return checked, is
}

// streamHints are the hints of the errors logic.CheckStream reports, by key.
var streamHints = map[string]string{
	"partitions":   fmt.Sprintf("the partitions of the stream's log and speed state, 1 (the default) to %d; they can only grow", logic.MaxPartitions),
	"partition_by": "a declared field whose value picks an event's partition (default: the id field, else round robin)",
}

// validateViews checks every view against its stream, even when the stream
// has errors (against each of its compiled forms, reporting what is wrong
// in all of them).
func (c *Config) validateViews(checked map[string][]*logic.Stream) issues {
	var is issues
	if len(c.Views.Names) == 0 {
		is.add("views", "declare at least one view", "no views")
	}
	for _, name := range c.Views.Names {
		key := "views." + name
		vc := c.Views.ByName[name]
		streams, ok := c.definedOver(&is, key, "view", name, vc.Stream, checked)
		if !ok {
			continue
		}
		var sets [][]logic.DefError
		for _, s := range streams {
			sets = append(sets, logic.CheckView(name, viewDef(vc), s))
		}
		is.addEvery(key, sets)
	}
	return is
}

// definedOver checks the name of a definition (a view, an entity, a rule)
// over a stream and returns the stream as each checked reading of it
// compiled (validateStreams); ok is false, with the issue added, when the
// name is bad or the stream unknown (a declared stream with errors of its
// own adds none).
func (c *Config) definedOver(is *issues, key, what, name, stream string, checked map[string][]*logic.Stream) ([]*logic.Stream, bool) {
	if !nameRe.MatchString(name) {
		is.add(key, "lowercase letters, digits and _", "bad %s name", what)
		return nil, false
	}
	streams, ok := checked[stream]
	if !ok {
		if _, declared := c.Streams[stream]; !declared {
			is.add(key+".stream", "one of the streams above", "unknown stream %q", stream)
		}
		return nil, false
	}
	return streams, true
}

// addEvery adds, under key, the mistakes found in every set (inEvery).
func (is *issues) addEvery(key string, sets [][]logic.DefError) {
	for _, e := range inEvery(sets) {
		is.add(key+"."+e.Key, "", "%v", e.Err)
	}
}

// eg is a validation hint quoting a default value: "e.g. 2000", "e.g. 2m".
func eg[T int | int64 | time.Duration](v T) string {
	if d, ok := any(v).(time.Duration); ok {
		return "e.g. " + formatDuration(d)
	}
	return fmt.Sprintf("e.g. %d", v)
}

// shortDuration writes a duration as time.Duration does, without zero
// minutes or seconds at its end: 30m15s, 2h, 31m.
func shortDuration(d time.Duration) string {
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// egMiB is eg for a byte size of whole MiB: "e.g. 33554432 (32 MiB)".
func egMiB(n int64) string { return fmt.Sprintf("e.g. %d (%d MiB)", n, n>>20) }

// formatDuration writes a duration as the configuration reads it, in the
// largest unit (d, h, m, s) that counts it whole at least twice, else in
// seconds or milliseconds: 7d, 2m, 60s, 10s, 1s, 25ms. ParseDuration reads
// it back.
func formatDuration(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d%u.d == 0 && d/u.d >= 2 {
			return fmt.Sprintf("%d%s", d/u.d, u.name)
		}
	}
	switch {
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return d.String()
}
