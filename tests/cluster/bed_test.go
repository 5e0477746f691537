// Package cluster is Braid's cluster test bed: on one machine, a
// three-node NATS cluster (nats-server processes), a six-node Redis
// Cluster, the S3 server, and every Braid layer as two processes of its
// own (serve, speed, archive, batch), each with its own data_dir. Faults
// are injected at random moments during ingest; after each, both serve
// replicas must answer exactly and the lake and the log must hold every
// accepted event once.
//
// `make test` runs each fault once; `make test-cluster` runs each many
// times (BRAID_CLUSTER_TRIALS).
package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// partitions is the orders stream's partition count on the bed.
const partitions = 4

// bed is the running test bed.
type bed struct {
	t     *testing.T
	nats  *testenv.NATSCluster
	redis *testenv.RedisCluster
	s3    *testenv.S3
	st    *testenv.Stack // the configuration every process shares (each with its own data_dir and port)

	serve   [2]*proc
	speed   [2]*proc
	archive [2]*proc
	batch   [2]*proc
}

// proc is one Braid process of the bed: its own configuration (port and
// data_dir) and the running process, started again after a kill.
type proc struct {
	layer string
	st    *testenv.Stack
	p     *testenv.Proc
	env   []string
}

// catalog is the bed's configuration body: orders in four partitions (by
// order_id, the id field), the exact view by minute and country and the
// sketch view by hour, fast micro-batches and archive writes, no
// scheduled batch runs (the test runs them).
func catalog() testenv.Catalog {
	c := testenv.E2E()
	c.Streams[0].Partitions = partitions
	c.Archive = "max_rows: 1000, max_delay: 300ms, compact: true, upkeep_every: 2s"
	return c
}

// newBed starts the servers and the eight Braid processes and waits until
// both replicas answer.
func newBed(t *testing.T) *bed {
	t.Helper()
	b := &bed{t: t}
	b.nats = testenv.StartNATSCluster(t, 3)
	b.redis = testenv.StartRedisCluster(t)
	b.s3 = testenv.StartS3(t)
	b.st = testenv.NewStack(t, catalog().YAML(),
		testenv.WithNATSCluster(b.nats), testenv.WithRedisCluster(b.redis), testenv.WithS3(b.s3))
	for i := range 2 {
		b.serve[i] = b.start("serve", "BRAID_BATCH_WORKERS=0")
		b.speed[i] = b.start("speed")
		b.archive[i] = b.start("archive")
		b.batch[i] = b.start("batch")
	}
	for _, s := range b.serve {
		s.st.WaitViewsReady()
	}
	return b
}

// start starts a Braid process of a layer with a configuration of its own.
func (b *bed) start(layer string, env ...string) *proc {
	b.t.Helper()
	p := &proc{layer: layer, st: b.st.Twin(), env: append(b.st.Env(), env...)}
	p.run(b.t)
	return p
}

// run starts the process (again); serve replicas are waited for until
// they answer /readyz.
func (p *proc) run(t *testing.T) {
	t.Helper()
	base := ""
	if p.layer == "serve" {
		base = p.st.Base
	}
	p.p = testenv.StartBraidEnv(t, base, p.env, p.layer, "--config", p.st.Config)
}

// trials is how many times each fault runs: BRAID_CLUSTER_TRIALS, else 1.
func trials() int {
	if n, err := strconv.Atoi(os.Getenv("BRAID_CLUSTER_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 1
}

// httpDo sends a request and decodes a JSON answer into out; it returns
// the status (0 when the server could not be reached).
func httpDo(method, url string, body []byte, out any) (int, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode/100 == 2 && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %q: %w", b, err)
		}
	}
	return resp.StatusCode, nil
}
