package tests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

func slowClientsCatalog() testenv.Catalog {
	return testenv.Catalog{
		Batch:   "every: 0",
		Streams: []testenv.Stream{testenv.Clicks().Without("ms")},
		Views:   []testenv.View{testenv.ClicksByPage()},
	}
}

// rawClient is a connection that sent the headers of an ingest request
// announcing a body of size bytes, with Expect: 100-continue so that it
// learns when braid reads the body.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string, size int) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "POST /v1/streams/clicks/events HTTP/1.1\r\nHost: braid\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", size); err != nil {
		t.Fatal(err)
	}
	return &rawClient{conn: c, br: bufio.NewReader(c)}
}

// continued waits at most wait for braid to ask for the body.
func (c *rawClient) continued(wait time.Duration) error {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	defer c.conn.SetReadDeadline(time.Time{})
	line, err := c.br.ReadString('\n')
	if err == nil && !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		err = fmt.Errorf("answered %q instead of 100 Continue", strings.TrimSpace(line))
	}
	if err == nil {
		_, err = c.br.ReadString('\n')
	}
	return err
}

// TestSlowClients runs braid up with 70 clients sending 100 kB bodies at
// one byte a second, more than http.max_in_flight (64): every other
// client's ingest is answered 200; an idle keep-alive connection is closed
// after http.idle_timeout; SIGTERM does not wait for the slow bodies: they
// are answered 503 and braid exits 0.
func TestSlowClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs braid up with 70 slow clients: not in -short")
	}
	t.Setenv("BRAID_HTTP_IDLE_TIMEOUT", "1s")
	st := testenv.Up(t, slowClientsCatalog().YAML())
	base, p := st.Base, st.Braid
	addr := strings.TrimPrefix(base, "http://")

	const slowN = 70
	slow := make([]*rawClient, slowN)
	for i := range slow {
		slow[i] = dialRaw(t, addr, 100_000)
	}
	for i, c := range slow {
		if err := c.continued(30 * time.Second); err != nil {
			t.Fatalf("slow client %d: %v", i, err)
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

	const fastN, each = 8, 10
	client := &http.Client{Timeout: time.Minute}
	var mu sync.Mutex
	codes := map[int]int{}
	var lat []time.Duration
	var wg sync.WaitGroup
	for g := range fastN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				body := fmt.Sprintf(`{"id":"fast-%d-%d","ts":%q,"page":"home"}`, g, i, time.Now().UTC().Format(time.RFC3339))
				start := time.Now()
				resp, err := client.Post(base+"/v1/streams/clicks/events", "application/json", strings.NewReader(body))
				d := time.Since(start)
				code := -1
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
					if code != 200 {
						t.Errorf("fast client: %d %s", code, b)
					}
				}
				mu.Lock()
				codes[code]++
				if code == 200 {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if codes[200] != fastN*each {
		t.Fatalf("fast clients with %d slow ones connected: %v, want %d 200s", slowN, codes, fastN*each)
	}
	slices.Sort(lat)
	t.Logf("braid up, %d slow bodies arriving: %d fast requests all 200, latency p50 %v p90 %v max %v", slowN, len(lat),
		lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)-1])

	// An idle keep-alive connection is closed after http.idle_timeout (1s).
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: braid\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	idle := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle keep-alive connection: %v after %v, want it closed", err, time.Since(idle))
	}
	t.Logf("idle keep-alive connection closed after %v (http.idle_timeout 1s)", time.Since(idle).Round(10*time.Millisecond))

	// SIGTERM: the slow bodies are cut with 503, braid exits 0.
	stopAt := time.Now()
	if err := p.Stop(t); err != nil {
		t.Fatalf("braid up exited with %v on SIGTERM with %d slow bodies arriving", err, slowN)
	}
	t.Logf("braid up stopped %v after SIGTERM with %d slow bodies arriving", time.Since(stopAt).Round(10*time.Millisecond), slowN)
	for i, c := range slow {
		_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("slow client %d after SIGTERM: %v, want a 503", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !bytes.Contains(b, []byte("shutting down")) {
			t.Fatalf("slow client %d after SIGTERM: %d %s", i, resp.StatusCode, b)
		}
	}
}
