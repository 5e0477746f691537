package testenv

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Stack is braid under test with the servers it runs against: a config file
// of its own (namespace, data dir and HTTP port unique to the test), a
// redis-server started for it unless braid up is to start its own, and NATS
// embedded inside braid unless the test runs a server beside it. Everything
// it starts is stopped when the test ends. Its methods only read it: a test
// may start processes from several goroutines.
type Stack struct {
	t                           testing.TB
	natsURL, natsKeys, redisURL string
	redisKeys                   string // further keys of the redis: section

	Config    string // path of the config file
	Base      string // http://127.0.0.1:PORT, where braid serves HTTP
	DataDir   string // data_dir of the config
	Namespace string // namespace of the config (NATS streams, Redis keys)
	Body      string // what the config holds below the sections the stack writes

	NATS         *NATS         // with WithNATS or SharedNATS; nil when braid embeds NATS
	NATSProc     *NATSProc     // with WithNATSProc
	NATSCluster  *NATSCluster  // with WithNATSCluster
	Redis        *Redis        // nil with WithoutRedis or WithRedisCluster
	RedisCluster *RedisCluster // with WithRedisCluster
	S3           *S3           // with WithS3: the lake and batch views live in its bucket
	Braid        *Proc         // the braid up Up started; nil after NewStack

	env []string // the environment of the braid processes it starts
}

// Option chooses the servers of a stack. Of WithNATSCluster, SharedNATS,
// WithNATSProc and WithNATS the first in that order that is given is the
// stack's NATS.
type Option func(*stackOptions)

type stackOptions struct {
	nats         bool
	natsProc     bool
	shared       *NATS
	noRedis      bool
	natsKeys     string
	s3           *S3
	redisCluster *RedisCluster
	natsCluster  *NATSCluster
}

// WithNATS runs a JetStream server (StartNATS) beside braid, so the test
// can read the log or restart braid over the same streams; without it
// braid embeds its own.
func WithNATS() Option { return func(o *stackOptions) { o.nats = true } }

// WithNATSProc runs nats-server as a process of its own (StartNATSProc),
// which the test can kill -9 and start again.
func WithNATSProc() Option { return func(o *stackOptions) { o.natsProc = true } }

// SharedNATS points the stack at a server the test already runs (shared by
// several stacks, each in its own namespace).
func SharedNATS(n *NATS) Option { return func(o *stackOptions) { o.shared = n } }

// WithoutRedis leaves redis.url empty: braid up starts a redis-server of
// its own under data_dir.
func WithoutRedis() Option { return func(o *stackOptions) { o.noRedis = true } }

// WithS3 keeps the lake and the batch views in a prefix of their own of
// s3's bucket (storage.url), with the keys in the environment of the braid
// processes the stack starts (Start, Spawn, Run).
func WithS3(s3 *S3) Option { return func(o *stackOptions) { o.s3 = s3 } }

// WithNATSCluster points the stack at a NATS cluster the test runs (its
// servers' URLs, every stream with as many replicas as it has servers).
func WithNATSCluster(c *NATSCluster) Option { return func(o *stackOptions) { o.natsCluster = c } }

// WithRedisCluster points the stack at a Redis Cluster the test runs
// (redis.url its seeds, redis.cluster true) instead of a redis-server of
// its own.
func WithRedisCluster(rc *RedisCluster) Option { return func(o *stackOptions) { o.redisCluster = rc } }

// NATSKeys adds keys to the nats: section of the config, after its url
// (e.g. "publish_timeout: 1s").
func NATSKeys(keys string) Option { return func(o *stackOptions) { o.natsKeys = keys } }

// NewStack starts the stack's servers and writes its config (the header of
// writeConfig, then body) without starting braid: Start, Spawn or
// RunBraid with --config s.Config do.
func NewStack(t testing.TB, body string, opts ...Option) *Stack {
	t.Helper()
	var o stackOptions
	for _, opt := range opts {
		opt(&o)
	}
	s := &Stack{t: t, Body: body, natsKeys: o.natsKeys, env: BraidEnv()}
	switch {
	case o.natsCluster != nil:
		s.NATSCluster = o.natsCluster
		s.natsURL = o.natsCluster.URLs()
		s.natsKeys = strings.TrimPrefix(s.natsKeys+", replicas: "+strconv.Itoa(len(o.natsCluster.Nodes)), ", ")
	case o.shared != nil:
		s.NATS = o.shared
		s.natsURL = s.NATS.URL
	case o.natsProc:
		s.NATSProc = StartNATSProc(t)
		s.natsURL = s.NATSProc.URL
	case o.nats:
		s.NATS = StartNATS(t)
		s.natsURL = s.NATS.URL
	}
	switch {
	case o.redisCluster != nil:
		s.RedisCluster = o.redisCluster
		s.redisURL, s.redisKeys = o.redisCluster.Seeds(), "cluster: true"
	case !o.noRedis:
		s.Redis = StartRedis(t)
		s.redisURL = s.Redis.URL
	}
	s.Namespace = Namespace(t)
	if o.s3 != nil {
		s.S3 = o.s3
		s.Body = fmt.Sprintf("storage: { url: %q, endpoint: %q, region: %q, path_style: true, access_key_env: %s, secret_key_env: %s }\n%s",
			o.s3.URL("braid/"+s.Namespace), o.s3.Endpoint, o.s3.Region, s3AccessEnv, s3SecretEnv, s.Body)
		s.env = append(s.env, s3AccessEnv+"="+o.s3.AccessKey, s3SecretEnv+"="+o.s3.SecretKey)
	}
	s.write()
	return s
}

// The variables a WithS3 stack's processes find the S3 keys in.
const (
	s3AccessEnv = "BRAID_TEST_S3_ACCESS_KEY"
	s3SecretEnv = "BRAID_TEST_S3_SECRET_KEY"
)

// Env is the environment of the braid processes the stack starts.
func (s *Stack) Env() []string { return append([]string(nil), s.env...) }

// Run runs `braid args... --config s.Config` to completion in the stack's
// environment and returns its output and exit code (RunBraidEnv).
func (s *Stack) Run(args ...string) (string, int) {
	s.t.Helper()
	return RunBraidEnv(s.t, s.env, append(args, "--config", s.Config)...)
}

// Up is NewStack followed by Start("up"): braid up ready to answer.
func Up(t testing.TB, body string, opts ...Option) *Stack {
	t.Helper()
	s := NewStack(t, body, opts...)
	s.Braid = s.Start("up")
	return s
}

// Start runs `braid args... --config s.Config` and waits until it answers
// /readyz on s.Base (StartBraid). The process is killed when the test ends.
func (s *Stack) Start(args ...string) *Proc {
	s.t.Helper()
	return StartBraidEnv(s.t, s.Base, s.env, append(args, "--config", s.Config)...)
}

// Spawn runs `braid args... --config s.Config` without waiting for
// anything (for the processes that serve no HTTP, or a test that watches
// the start itself). The process is killed when the test ends.
func (s *Stack) Spawn(args ...string) *Proc {
	s.t.Helper()
	return StartBraidEnv(s.t, "", s.env, append(args, "--config", s.Config)...)
}

// Twin writes a second config for the same deployment: the same servers,
// namespace and body, with an HTTP port and data dir of its own (another
// braid process beside the first). It starts nothing.
func (s *Stack) Twin() *Stack {
	s.t.Helper()
	tw := *s
	tw.Braid = nil
	tw.write()
	return &tw
}

// write writes the config in a directory of its own, on a free port.
func (s *Stack) write() {
	s.t.Helper()
	nats := fmt.Sprintf("url: %q", s.natsURL)
	if s.natsKeys != "" {
		nats += ", " + s.natsKeys
	}
	redis := fmt.Sprintf("url: %q", s.redisURL)
	if s.redisKeys != "" {
		redis += ", " + s.redisKeys
	}
	s.Config, s.Base, s.DataDir = writeConfig(s.t, s.Namespace, nats, redis, s.Body)
}

// writeConfig writes a braid config for a test: its own data dir and HTTP
// port, namespace ns, redis and nats as the keys of its redis: and nats:
// sections (a url "" in redis: braid up starts its own; no url in nats:
// NATS embedded in braid); body holds the streams, views and other
// sections.
func writeConfig(t testing.TB, ns, nats, redis, body string) (path, base, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	port := FreePort(t)
	base = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := fmt.Sprintf("data_dir: %s\nnamespace: %s\nhttp: { addr: \"127.0.0.1:%d\" }\nnats: { %s }\nredis: { %s }\n%s",
		dataDir, ns, port, nats, redis, body)
	path = filepath.Join(dir, "braid.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, base, dataDir
}

// WaitViewsReady waits until /v1/status on s.Base reports every view
// "ready" (a fresh start answers 503 "view rebuilding" until the batch
// run of the added views has published), failing the test after 60 s.
func (s *Stack) WaitViewsReady() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		var st struct {
			Views map[string]struct {
				State string `json:"state"`
			} `json:"views"`
		}
		resp, err := http.Get(s.Base + "/v1/status")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil {
			ready := len(st.Views) > 0
			last = ""
			for name, v := range st.Views {
				if v.State != "ready" {
					ready, last = false, name+" "+v.State
				}
			}
			if ready {
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("views not ready after 60s (%s)", last)
}
