package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// A stream whose events need a page: `{}` is rejected.
func rejectsCatalog() testenv.Catalog {
	clicks := testenv.Clicks()
	clicks.Lateness = "1h"
	junk := clicks
	junk.Name = "junk"
	return testenv.Catalog{
		Epoch:   "1s",
		Batch:   "every: 0",
		Streams: []testenv.Stream{junk, clicks},
		Views:   []testenv.View{testenv.ClicksByPage()},
	}
}

// procStatus reads a kB figure (VmRSS, VmHWM) of a process from /proc.
func procStatus(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

// logContents reads what a JetStream subject holds: for each message,
// its packed events' ids (a message that is not a packed record counts as
// one event under its message id), straight from the server.
func logContents(t *testing.T, js jetstream.JetStream, stream, subject string) (ids map[string]int, events, records int) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Subjects[subject])
	ids = map[string]int{}
	for records < want {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			records++
			if err := eventlog.Unpack(m.Data(), func(_ int, id, _ []byte) error {
				ids[string(id)]++
				events++
				return nil
			}); err != nil {
				ids[m.Headers().Get(jetstream.MsgIDHeader)]++
				events++
			}
		}
		if got == 0 {
			t.Fatalf("read %d of %d records of %s", records, want, subject)
		}
	}
	return ids, events, records
}

// memorySampler samples a braid process's resident memory and its Go heap
// in use (its /metrics) while it runs, keeping the peaks.
type memorySampler struct{ rss, heap *sampler }

func sampleMemory(pid int, base string) memorySampler {
	client := &http.Client{Timeout: 5 * time.Second}
	return memorySampler{
		rss: sample(50*time.Millisecond, func() int64 { n, _ := procStatus(pid, "VmRSS"); return n }),
		heap: sample(50*time.Millisecond, func() int64 {
			resp, err := client.Get(base + "/metrics")
			if err != nil {
				return 0
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			v, _ := metricValue(string(b), "go_memstats_heap_inuse_bytes")
			return int64(v)
		}),
	}
}

// peaks stops sampling and returns the peaks: resident memory, Go heap.
func (m memorySampler) peaks() (rss, heap int64) { return m.rss.end(), m.heap.end() }

type rejectsAnswer struct {
	Accepted      int `json:"accepted"`
	Rejected      int `json:"rejected"`
	ErrorsOmitted int `json:"errors_omitted"`
	Errors        []struct {
		Index int    `json:"index"`
		Error string `json:"error"`
	} `json:"errors"`
}

// TestRejectsInBulk: a request of a million rejects (3 MB of `{}`) and a
// 200,000-line NDJSON body with 86,000 bad lines, over HTTP against
// `braid up` with its embedded nats-server. Each is answered 200 with
// accepted and rejected as stored: the log holds every good event once
// and the dead-letter queue every reject once (read straight from
// JetStream), a retry of the same request stores nothing more, and the
// process stays within its memory limit (384 MiB, the default, for the Go
// memory, and 64 MiB beyond for the rest): dead letters are written as
// they come, packed into records like events.
func TestRejectsInBulk(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk rejects: not in -short")
	}
	t.Setenv("BRAID_NATS_PUBLISH_TIMEOUT", "60s") // a loaded machine must not fail the test
	st := testenv.Up(t, rejectsCatalog().YAML())
	base, p, ns := st.Base, st.Braid, st.Namespace
	pid := p.Cmd.Process.Pid
	m := regexp.MustCompile(`started embedded nats-server with JetStream" url=(\S+)`).FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("no nats-server url in the output:\n%s", p.Output())
	}
	nc, err := nats.Connect(m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rss0, err := procStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	// memory_limit (the default) bounds the Go memory; the process holds
	// about 55 MiB more (code, DuckDB), see the README's Performance.
	const memoryLimit, beyondGo = 384 << 20, 64 << 20
	client := &http.Client{Timeout: 10 * time.Minute}
	post := func(stream, ctype string, body []byte) (rejectsAnswer, time.Duration) {
		t.Helper()
		t0 := time.Now()
		resp, err := client.Post(base+"/v1/streams/"+stream+"/events", ctype, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(t0)
		var a rejectsAnswer
		if resp.StatusCode != 200 || json.Unmarshal(b, &a) != nil {
			t.Fatalf("POST %s (%d bytes): %d after %v: %.300s", stream, len(body), resp.StatusCode, took, b)
		}
		return a, took
	}
	status := func(stream string) (deadLetters uint64) {
		var s struct {
			Streams map[string]struct {
				DeadLetters uint64 `json:"dead_letters"`
			} `json:"streams"`
		}
		if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &s); code != 200 {
			t.Fatalf("status %d", code)
		}
		return s.Streams[stream].DeadLetters
	}

	// A million rejects in one request.
	const million = 1_000_000
	body := make([]byte, 0, 3*million+1)
	body = append(body, '[')
	for i := range million {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, "{}"...)
	}
	body = append(body, ']')
	smp := sampleMemory(pid, base)
	for try := range 2 {
		a, took := post("junk", "application/json", body)
		if a.Accepted != 0 || a.Rejected != million || len(a.Errors) != 1000 || a.ErrorsOmitted != million-1000 ||
			a.Errors[999].Index != 999 || !strings.Contains(a.Errors[0].Error, "required field is missing") {
			t.Fatalf("try %d: accepted %d rejected %d, %d errors listed, %d omitted", try, a.Accepted, a.Rejected, len(a.Errors), a.ErrorsOmitted)
		}
		ids, n, records := logContents(t, js, ns+"_dlq", ns+".dlq.junk")
		if n != million || len(ids) != million {
			t.Fatalf("try %d: the dead-letter queue holds %d letters (%d ids), want %d once each", try, n, len(ids), million)
		}
		if got := status("junk"); got != million {
			t.Fatalf("try %d: status says %d dead letters, want %d", try, got, million)
		}
		t.Logf("a million rejects, try %d: 200 in %v; %d letters in %d records", try, took.Round(time.Millisecond), n, records)
	}
	rssPeak, heapPeak := smp.peaks()
	hwm, _ := procStatus(pid, "VmHWM")
	t.Logf("a million rejects: braid up RSS %d MiB before, peak %d MiB sampled, VmHWM %d MiB; Go heap in use peak %d MiB (memory_limit %d MiB)",
		rss0>>20, rssPeak>>20, hwm>>20, heapPeak>>20, memoryLimit>>20)
	if hwm > memoryLimit+beyondGo {
		t.Fatalf("braid up peaked at %d MiB resident, over its memory limit of %d MiB and %d MiB beyond", hwm>>20, memoryLimit>>20, beyondGo>>20)
	}
	// The listing pages by letter.
	var page struct {
		Events []eventlog.DeadLetter `json:"events"`
		Next   string                `json:"next"`
	}
	if code := httpJSON(t, "GET", base+"/v1/dlq/junk?limit=3", "", nil, &page); code != 200 || len(page.Events) != 3 || page.Next != page.Events[2].Cursor().String() {
		t.Fatalf("dlq listing: %d %+v", code, page)
	}

	// 200,000 lines, 86,000 of them bad in three ways.
	var nd bytes.Buffer
	good := map[string]bool{}
	bad := 0
	ts := time.Now().UTC().Add(-10 * time.Minute).Format(time.RFC3339)
	for i := range 200_000 {
		switch k := i % 100; {
		case k < 30:
			fmt.Fprintf(&nd, `{"id":"e%d","ts":%q,"ms":%d}`+"\n", i, ts, i) // no page
			bad++
		case k < 40:
			fmt.Fprintf(&nd, `{"id":"e%d","ts":%q,"page":"p","ms":"x"}`+"\n", i, ts) // ms not an int
			bad++
		case k < 43:
			fmt.Fprintf(&nd, `{"id":"e%d","ts":%q,"page":`+"\n", i, ts) // cut short
			bad++
		default:
			fmt.Fprintf(&nd, `{"id":"e%d","ts":%q,"page":"p%d","ms":%d}`+"\n", i, ts, i%7, i)
			good[fmt.Sprintf("e%d", i)] = true
		}
	}
	if bad != 86_000 || len(good) != 114_000 {
		t.Fatalf("the file has %d bad and %d good lines", bad, len(good))
	}
	smp = sampleMemory(pid, base)
	for try := range 2 {
		a, took := post("clicks", "application/x-ndjson", nd.Bytes())
		if a.Accepted != len(good) || a.Rejected != bad || len(a.Errors) != 1000 || a.ErrorsOmitted != bad-1000 {
			t.Fatalf("try %d: accepted %d rejected %d, %d errors listed, %d omitted", try, a.Accepted, a.Rejected, len(a.Errors), a.ErrorsOmitted)
		}
		ids, n, _ := logContents(t, js, ns+"_events_clicks", ns+".events.clicks.0")
		if n != len(good) || len(ids) != len(good) {
			t.Fatalf("try %d: the log holds %d events (%d ids), want %d once each", try, n, len(ids), len(good))
		}
		for id := range ids {
			if !good[id] {
				t.Fatalf("try %d: the log holds %s, not a good line", try, id)
			}
		}
		dl, n, _ := logContents(t, js, ns+"_dlq", ns+".dlq.clicks")
		if n != bad || len(dl) != bad {
			t.Fatalf("try %d: the dead-letter queue holds %d letters (%d ids), want %d once each", try, n, len(dl), bad)
		}
		if got := status("clicks"); got != uint64(bad) {
			t.Fatalf("try %d: status says %d dead letters, want %d", try, got, bad)
		}
		t.Logf("200,000 lines (%d MB), try %d: 200 in %v", nd.Len()>>20, try, took.Round(time.Millisecond))
	}
	rssPeak, heapPeak = smp.peaks()
	hwm, _ = procStatus(pid, "VmHWM")
	t.Logf("after the NDJSON file: braid up RSS peak %d MiB sampled, VmHWM %d MiB; Go heap in use peak %d MiB", rssPeak>>20, hwm>>20, heapPeak>>20)
	if hwm > memoryLimit+beyondGo {
		t.Fatalf("braid up peaked at %d MiB resident, over its memory limit of %d MiB and %d MiB beyond", hwm>>20, memoryLimit>>20, beyondGo>>20)
	}
}
