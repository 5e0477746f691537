package serving_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// servedEnv is a serving.Server behind its own http.Server (HTTPServer,
// as braid serves it) over a real JetStream log.
type servedEnv struct {
	url  string
	addr string
	hs   *http.Server
	log  *eventlog.Log
	js   jetstream.JetStream
	reg  *prometheus.Registry
	nats *testenv.NATS
}

func newServedEnv(t *testing.T, cfg config.Config) *servedEnv {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	l, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st := testenv.OrdersStream(t)
	reg := prometheus.NewRegistry()
	s, err := serving.New(serving.Options{Config: &cfg, Catalog: testCatalog(st, testView(t, st, "v", time.Minute, 0)), Log: l, Registry: reg, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := s.HTTPServer()
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return &servedEnv{url: "http://" + ln.Addr().String(), addr: ln.Addr().String(), hs: hs, log: l, js: js, reg: reg, nats: n}
}

func (e *servedEnv) post(t *testing.T, hdr map[string]string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/streams/orders/events", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// gauge reads one gauge of the env's registry.
func (e *servedEnv) gauge(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// slowClient is a raw connection that sent the headers of an ingest
// request announcing a body of size bytes and asked to be told when the
// server reads it (Expect: 100-continue).
type slowClient struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialSlow(t *testing.T, addr string, size int) *slowClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "POST /v1/streams/orders/events HTTP/1.1\r\nHost: braid\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", size); err != nil {
		t.Fatal(err)
	}
	return &slowClient{conn: c, br: bufio.NewReader(c)}
}

// statusLine reads the next status line the server sends, waiting at most
// wait.
func (c *slowClient) statusLine(wait time.Duration) (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	defer c.conn.SetReadDeadline(time.Time{})
	line, err := c.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(line, "HTTP/1.1 100") {
		_, err = c.br.ReadString('\n') // the blank line after an interim answer
	}
	return strings.TrimSpace(line), err
}

// response reads the final answer, waiting at most wait.
func (c *slowClient) response(wait time.Duration) (*http.Response, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestSlowBodies: 70 clients sending their bodies at one byte a second
// (more than http.max_in_flight, 64) do not keep other clients from
// ingesting: a body is read before its request takes a slot, so every fast
// client gets 200. Shutting the server down cuts the slow bodies (503) and
// does not wait for them.
func TestSlowBodies(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.ReadTimeout = config.Duration(10 * time.Minute) // longer than the test: the slow ones are cut by the shutdown
	e := newServedEnv(t, cfg)
	const slowN, size = 70, 100_000
	slow := make([]*slowClient, slowN)
	for i := range slow {
		slow[i] = dialSlow(t, e.addr, size)
	}
	// Every slow request is being handled: the server asked for its body.
	for i, c := range slow {
		line, err := c.statusLine(30 * time.Second)
		if err != nil || line != "HTTP/1.1 100 Continue" {
			t.Fatalf("slow client %d: %q %v, want 100 Continue (its body read)", i, line, err)
		}
	}
	stop := make(chan struct{})
	var dribble sync.WaitGroup
	for _, c := range slow {
		dribble.Add(1)
		go func() {
			defer dribble.Done()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				if _, err := c.conn.Write([]byte(" ")); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	defer func() { close(stop); dribble.Wait() }()

	// Fast clients, 8 at a time, 10 requests each.
	const fastN, each = 8, 10
	var mu sync.Mutex
	codes := map[int]int{}
	var lat []time.Duration
	var wg sync.WaitGroup
	for g := range fastN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				start := time.Now()
				code, _, body := e.post(t, map[string]string{"Content-Type": "application/json"},
					fmt.Appendf(nil, `{"id":"fast-%d-%d","ts":1000,"device":"web"}`, g, i))
				d := time.Since(start)
				mu.Lock()
				codes[code]++
				if code == 200 {
					lat = append(lat, d)
				} else if codes[code] == 1 {
					t.Errorf("fast client: %d %s", code, body)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	if codes[200] != fastN*each {
		t.Fatalf("fast clients with %d slow ones connected: %v, want %d 200s", slowN, codes, fastN*each)
	}
	t.Logf("%d fast requests with %d slow bodies arriving: all 200, latency p50 %v p90 %v max %v", len(lat), slowN,
		lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)-1])
	if n, _ := e.log.Info(context.Background(), "orders", 0); n.Msgs == 0 {
		t.Fatal("nothing stored")
	}
	// The slow bodies hold a little memory, no more than what they sent
	// rounded up to the first buffer each.
	if used := e.gauge(t, "braid_ingest_memory_bytes"); used <= 0 || used > slowN*16<<10 {
		t.Fatalf("braid_ingest_memory_bytes %v with %d slow bodies of a few bytes", used, slowN)
	}

	// Shutdown does not wait for the slow bodies: they are cut with 503.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.hs.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with %d slow bodies arriving: %v", slowN, err)
	}
	for i, c := range slow {
		resp, body, err := c.response(30 * time.Second)
		if err != nil {
			t.Fatalf("slow client %d after the shutdown: %v", i, err)
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !bytes.Contains(body, []byte("shutting down")) {
			t.Fatalf("slow client %d after the shutdown: %d %s", i, resp.StatusCode, body)
		}
	}
	if used := e.gauge(t, "braid_ingest_memory_bytes"); used != 0 {
		t.Fatalf("braid_ingest_memory_bytes %v after every request ended", used)
	}
}

// TestBodyReadTimeout: a body that has not arrived within http.read_timeout
// is answered 408 and its connection closed; a live stream, which has no
// body, stays open past it and past http.idle_timeout.
func TestBodyReadTimeout(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.ReadTimeout = config.Duration(time.Second)
	cfg.HTTP.IdleTimeout = config.Duration(time.Second)
	e := newServedEnv(t, cfg)
	live, err := http.Get(e.url + "/v1/views/v/live?from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	if live.StatusCode != 200 {
		t.Fatalf("live: %d", live.StatusCode)
	}
	liveLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(live.Body)
		for sc.Scan() {
			liveLines <- sc.Text()
		}
		close(liveLines)
	}()

	c := dialSlow(t, e.addr, 1000)
	if line, err := c.statusLine(30 * time.Second); err != nil || line != "HTTP/1.1 100 Continue" {
		t.Fatalf("slow client: %q %v", line, err)
	}
	if _, err := c.conn.Write([]byte(`{"id":"s1",`)); err != nil {
		t.Fatal(err)
	}
	resp, body, err := c.response(30 * time.Second)
	if err != nil {
		t.Fatalf("no answer to a body that stopped arriving: %v", err)
	}
	if resp.StatusCode != 408 || !resp.Close || !bytes.Contains(body, []byte("read_timeout")) {
		t.Fatalf("a body that stopped arriving: %d (close %v) %s", resp.StatusCode, resp.Close, body)
	}
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("connection after the 408: %v, want it closed", err)
	}
	// The live stream has outlived both timeouts and is still open.
	time.Sleep(time.Second)
	var got []string
	for drained := false; !drained; {
		select {
		case line, ok := <-liveLines:
			if !ok {
				t.Fatalf("the live stream ended after the timeouts: %q", got)
			}
			got = append(got, line)
		default:
			drained = true
		}
	}
	if !slices.Contains(got, "retry: 2000") {
		t.Fatalf("live stream sent %q", got)
	}
	if code, _, body := e.post(t, nil, []byte(`{"id":"after","ts":1000,"device":"web"}`)); code != 200 {
		t.Fatalf("ingest after the timeout: %d %s", code, body)
	}
}

// TestIdleConnectionClosed: a keep-alive connection that sends no request
// for http.idle_timeout is closed by the server.
func TestIdleConnectionClosed(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.IdleTimeout = config.Duration(500 * time.Millisecond)
	e := newServedEnv(t, cfg)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 2 { // a kept-alive connection answers again
		if _, err := fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: braid\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("request %d: %d (close %v)", i, resp.StatusCode, resp.Close)
		}
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v after %v, want it closed by the server", err, time.Since(start))
	}
	t.Logf("idle connection closed after %v (http.idle_timeout 500ms)", time.Since(start).Round(time.Millisecond))
}

// TestIngestMemoryBudget: bodies being read hold their bytes of
// http.ingest_memory_bytes; one that does not fit beside them is 429, and
// fits again once they are done.
func TestIngestMemoryBudget(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 64 << 10
	cfg.HTTP.IngestMemoryBytes = 64 << 10
	e := newServedEnv(t, cfg)
	line := func(id string) string { return fmt.Sprintf(`{"id":%q,"ts":1000,"device":"web"}`, id) }
	// A body of 50,000 bytes, 40,000 of them sent.
	body := []byte(line("held") + "\n" + strings.Repeat(" ", 50_000-len(line("held"))-2) + "\n")
	c := dialSlow(t, e.addr, len(body))
	if l, err := c.statusLine(30 * time.Second); err != nil || l != "HTTP/1.1 100 Continue" {
		t.Fatalf("slow client: %q %v", l, err)
	}
	if _, err := c.conn.Write(body[:40_000]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.gauge(t, "braid_ingest_memory_bytes") < 40_000 {
		if time.Now().After(deadline) {
			t.Fatalf("braid_ingest_memory_bytes %v, want the 40,000 bytes read", e.gauge(t, "braid_ingest_memory_bytes"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	other := []byte(line("other") + strings.Repeat(" ", 30_000))
	code, hdr, resp := e.post(t, map[string]string{"Content-Type": "application/json"}, other)
	if code != 429 || hdr.Get("Retry-After") == "" || !bytes.Contains(resp, []byte("ingest_memory_bytes")) {
		t.Fatalf("a body beyond the memory left: %d %s", code, resp)
	}
	if _, err := c.conn.Write(body[40_000:]); err != nil {
		t.Fatal(err)
	}
	if r, b, err := c.response(30 * time.Second); err != nil || r.StatusCode != 200 {
		t.Fatalf("the held body: %v %s", err, b)
	}
	if code, _, resp := e.post(t, map[string]string{"Content-Type": "application/json"}, other); code != 200 {
		t.Fatalf("the other body once the memory is free: %d %s", code, resp)
	}
	if used := e.gauge(t, "braid_ingest_memory_bytes"); used != 0 {
		t.Fatalf("braid_ingest_memory_bytes %v after every request ended", used)
	}
}

// TestIngestInFlight: http.max_in_flight bounds the requests storing their
// events: beyond it the answer is 429 with Retry-After. A request whose
// body is still arriving holds no slot.
func TestIngestInFlight(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.MaxInFlight = 1
	e := newServedEnv(t, cfg)
	ev := func(id string) []byte { return fmt.Appendf(nil, `{"id":%q,"ts":1000,"device":"web"}`, id) }
	jsonType := map[string]string{"Content-Type": "application/json"}

	// A body arriving through a pipe, the server reading it (100 Continue).
	pr, pw := io.Pipe()
	defer pw.Close()
	continued := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/streams/orders/events", pr)
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Expect", "100-continue")
		req = req.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got100Continue: func() { close(continued) }}))
		client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
		resp, err := client.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case <-continued:
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not read the piped body")
	}
	if _, err := pw.Write(append(ev("slow1"), '\n')); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"fast1", "fast2"} {
		if code, _, body := e.post(t, jsonType, ev(id)); code != 200 {
			t.Fatalf("%s while a body is arriving: %d %s", id, code, body)
		}
	}
	pw.Close()
	if code := <-done; code != 200 {
		t.Fatalf("the piped request: %d", code)
	}

	// Requests storing their events hold the slot: with NATS down each
	// waits for the publish timeout, so of two sent together one is 429.
	e.nats.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for try := 0; ; try++ {
		type answer struct {
			code int
			hdr  http.Header
			body []byte
		}
		answers := make(chan answer, 2)
		for k := range 2 {
			go func() {
				code, hdr, body := e.post(t, jsonType, ev(fmt.Sprintf("stuck-%d-%d", try, k)))
				answers <- answer{code, hdr, body}
			}()
		}
		a, b := <-answers, <-answers
		if b.code == 429 {
			a, b = b, a
		}
		if a.code == 429 && b.code == 503 {
			if a.hdr.Get("Retry-After") == "" || !bytes.Contains(a.body, []byte("in flight")) {
				t.Fatalf("429 without Retry-After or reason: %s", a.body)
			}
			break
		}
		if a.code != 503 || b.code != 503 || time.Now().After(deadline) {
			t.Fatalf("two requests storing with NATS down: %d %s and %d %s, want 429 and 503", a.code, a.body, b.code, b.body)
		}
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t *testing.T, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// bomb compresses n bytes of newlines, written in pieces.
func bomb(t *testing.T, coding string, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	var zw io.WriteCloser
	var err error
	if coding == "gzip" {
		zw, err = gzip.NewWriterLevel(&buf, gzip.BestCompression)
	} else {
		zw, err = zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	}
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("\n"), 1<<20)
	for range n >> 20 {
		if _, err := zw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCompressedBodies: gzip and zstd bodies (Content-Encoding) are
// decoded and answered exactly like the plain body; the size limit holds
// for the decoded bytes (a decompression bomb is 413, without holding its
// decoded size in memory); an unknown or stacked coding is 415.
func TestCompressedBodies(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	e := newServedEnv(t, cfg)
	// Events without ids (stored each time) and a rejected one.
	var nd bytes.Buffer
	for i := range 200 {
		fmt.Fprintf(&nd, `{"ts":%d,"device":"web","country":"DE","amount":%d.5,"email":"e%d@x.org"}`+"\n", 1000+i, i, i)
	}
	nd.WriteString(`{"ts":5,"device":"web","amount":"oops"}` + "\n")
	plain := nd.Bytes()
	ndType := "application/x-ndjson"
	var want []byte
	var records [][]byte
	for _, tc := range []struct {
		name, coding string
		body         []byte
	}{
		{"plain", "", plain},
		{"identity", "identity", plain},
		{"gzip", "gzip", gzipped(t, plain)},
		{"x-gzip", "x-gzip", gzipped(t, plain)},
		{"GZIP in capitals", "GZIP", gzipped(t, plain)},
		{"zstd", "zstd", zstded(t, plain)},
		{"two gzip streams", "gzip", append(gzipped(t, plain[:len(plain)/2]), gzipped(t, plain[len(plain)/2:])...)},
	} {
		before := len(testenv.StoredEvents(t, e.js, e.log.StreamName("orders", 0)))
		hdr := map[string]string{"Content-Type": ndType}
		if tc.coding != "" {
			hdr["Content-Encoding"] = tc.coding
		}
		code, _, body := e.post(t, hdr, tc.body)
		if code != 200 {
			t.Fatalf("%s: %d %s", tc.name, code, body)
		}
		stored := testenv.StoredEvents(t, e.js, e.log.StreamName("orders", 0))[before:]
		if want == nil {
			want, records = body, stored
			var r ingest.Result
			if json.Unmarshal(body, &r) != nil || r.Accepted != 200 || r.Rejected != 1 {
				t.Fatalf("plain: %s", body)
			}
			continue
		}
		if !bytes.Equal(body, want) {
			t.Errorf("%s: answer %s, the plain body's %s", tc.name, body, want)
		}
		if !slices.EqualFunc(stored, records, bytes.Equal) {
			t.Errorf("%s: stored %d events unlike the plain body's %d", tc.name, len(stored), len(records))
		}
	}

	storedBefore := len(testenv.StoredEvents(t, e.js, e.log.StreamName("orders", 0)))
	for _, tc := range []struct {
		name, coding string
		body         []byte
		code         int
		msg          string
	}{
		{"gzip bomb", "gzip", bomb(t, "gzip", 64<<20), 413, "too large once decoded"},
		{"zstd bomb", "zstd", bomb(t, "zstd", 64<<20), 413, "too large once decoded"},
		{"gzip just beyond the limit", "gzip", gzipped(t, bytes.Repeat([]byte("\n"), 1<<20+1)), 413, "too large once decoded"},
		{"compressed bytes beyond the limit", "gzip", gzipped(t, randomText(3<<20)), 413, "body too large"},
		{"corrupt gzip", "gzip", plain[:100], 400, "bad gzip body"},
		{"truncated gzip", "gzip", gzipped(t, plain)[:200], 400, "bad gzip body"},
		{"corrupt zstd", "zstd", plain[:100], 400, "bad zstd body"},
		{"unknown coding", "br", plain, 415, "content encoding"},
		{"deflate", "deflate", plain, 415, "content encoding"},
		{"stacked codings", "gzip, zstd", plain, 415, "one content coding at most"},
	} {
		code, hdr, body := e.post(t, map[string]string{"Content-Type": ndType, "Content-Encoding": tc.coding}, tc.body)
		if code != tc.code || !bytes.Contains(body, []byte(tc.msg)) {
			t.Errorf("%s (%d bytes): %d %.300s, want %d %q", tc.name, len(tc.body), code, body, tc.code, tc.msg)
		}
		if code == 415 && hdr.Get("Accept-Encoding") != "gzip, zstd" {
			t.Errorf("%s: Accept-Encoding %q", tc.name, hdr.Get("Accept-Encoding"))
		}
	}
	if n := len(testenv.StoredEvents(t, e.js, e.log.StreamName("orders", 0))); n != storedBefore {
		t.Fatalf("refused bodies stored %d events", n-storedBefore)
	}
	if used := e.gauge(t, "braid_ingest_memory_bytes"); used != 0 {
		t.Fatalf("braid_ingest_memory_bytes %v after every request ended", used)
	}
}

// randomText is n bytes that do not compress.
func randomText(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = 'a' + byte(x%26)
	}
	return b
}

// TestBodyMediaTypes: the usual NDJSON media types are NDJSON; a charset
// other than UTF-8 (or US-ASCII) is 415, as are types that do not say
// JSON.
func TestBodyMediaTypes(t *testing.T) {
	e := newServedEnv(t, config.Default())
	two := []byte(`{"id":"m1","ts":1000,"device":"web"}` + "\n" + `{"id":"m2","ts":1000,"device":"web"}` + "\n")
	one := []byte(`{"id":"m3","ts":1000,"device":"web"}`)
	for _, ct := range []string{"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
		"application/jsonlines", "application/x-ndjson; charset=utf-8", "Application/NDJSON; charset=UTF-8", "application/ndjson; charset=us-ascii"} {
		code, _, body := e.post(t, map[string]string{"Content-Type": ct}, two)
		var r ingest.Result
		if code != 200 || json.Unmarshal(body, &r) != nil || r.Accepted != 2 || r.Rejected != 0 {
			t.Errorf("%s: %d %s, want both lines accepted", ct, code, body)
		}
	}
	for _, ct := range []string{"", "application/json", "application/json; charset=utf-8", "application/json;charset=\"UTF-8\"", "application/json; charset=utf8"} {
		if code, _, body := e.post(t, map[string]string{"Content-Type": ct}, one); code != 200 {
			t.Errorf("%q: %d %s", ct, code, body)
		}
	}
	for _, tc := range []struct{ ct, msg string }{
		{"application/json; charset=utf-16", "charset utf-16"},
		{"application/x-ndjson; charset=UTF-16LE", "charset UTF-16LE"},
		{"application/json; charset=iso-8859-1", "charset iso-8859-1"},
		{"text/plain", "unsupported content type"},
		{"application/xml", "unsupported content type"},
		{"application/json; =;", "bad content type"},
	} {
		code, _, body := e.post(t, map[string]string{"Content-Type": tc.ct}, one)
		if code != 415 || !bytes.Contains(body, []byte(tc.msg)) {
			t.Errorf("%s: %d %s, want 415 %q", tc.ct, code, body, tc.msg)
		}
	}
	// A UTF-16 body declared as such is refused, not dead-lettered.
	u16 := []byte{0xff, 0xfe}
	for _, r := range string(one) {
		u16 = append(u16, byte(r), 0)
	}
	if code, _, body := e.post(t, map[string]string{"Content-Type": "application/json; charset=utf-16"}, u16); code != 415 {
		t.Errorf("a UTF-16 body: %d %s", code, body)
	}
	if n, _ := e.log.DeadLetterCount(context.Background(), "orders"); n != 0 {
		t.Errorf("%d dead letters from refused bodies", n)
	}
}
