package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

func ingestCatalog() testenv.Catalog {
	orders := testenv.Orders().Without("items").With("note: string")
	orders.Lateness = ""
	byCountry := testenv.OrdersByCountry()
	byCountry.Measures = []string{"orders: count()"}
	return testenv.Catalog{Streams: []testenv.Stream{orders}, Views: []testenv.View{byCountry}}
}

// runCmd runs a braid command in this process and returns its exit code
// and what it printed on stdout.
func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	out := make(chan string)
	go func() { b, _ := io.ReadAll(r); out <- string(b) }()
	code := run(context.Background(), args)
	os.Stdout = stdout
	w.Close()
	return code, <-out
}

// TestIngestCommand: `braid ingest` loads a file through the same ingest
// path as HTTP, against a real JetStream server: events too large for one
// log message do not fail the load, they are dead-lettered with their
// reason (the payload cut to a head) and counted as rejected, and every
// other event is stored. `braid dlq replay` then goes through the queue.
func TestIngestCommand(t *testing.T) {
	// The catalog hashes e-mails: ingest and dlq replay, like every
	// process beside others, need the deployment's key.
	t.Setenv(testenv.PIIKeyEnv, testenv.PIIKey)
	st := testenv.NewStack(t, ingestCatalog().YAML(), testenv.WithNATS(), testenv.WithoutRedis())
	n, cfgPath := st.NATS, st.Config
	ev := func(id, extra string) string {
		return fmt.Sprintf(`{"ts":"2026-01-01T00:00:00Z","order_id":%q,"country":"DE","amount":2.5,"email":"secret-%s@x.org"%s}`, id, id, extra)
	}
	lt := strings.Repeat("<", 60000) // 6 bytes each in a record: three such values are over 1 MiB
	lines := []string{
		ev("g1", ""),
		ev(lt, fmt.Sprintf(`,"country":%q,"note":%q`, lt, lt)), // record over the message limit
		ev("g2", ""),
		ev("long", `,"note":"`+strings.Repeat("y", 2<<20)+`"`), // value over max_value_bytes, payload over the limit
		ev("bad", `,"amount":"x"`),                             // an ordinary reject
		ev("g3", `,"blob":"`+strings.Repeat("z", 300<<10)+`"`), // a big unknown field is dropped: accepted
		ev("g4", ""),
	}
	file := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out := runCmd(t, "ingest", "--config", cfgPath, "--stream", "orders", "--file", file, "--batch", "3")
	if code != 0 || !strings.Contains(out, "accepted=4 rejected=3") {
		t.Fatalf("braid ingest: exit %d, output %q", code, out)
	}

	ctx := context.Background()
	_, js := n.JetStream(t)
	cfg, err := loadConfig(cfgPath, false)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: cfg.Namespace, DedupWindow: cfg.NATS.DedupWindow.D()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := storedIDs(t, js, l), []string{"g1", "g2", "g3", "g4"}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	dls, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		field, reason string
		truncated     bool
	}{
		{"", "larger than the log's message limit", true},
		{"note", "longer than the limit", true},
		{"amount", "want a number", false},
	}
	if len(dls) != len(want) {
		t.Fatalf("%d dead letters, want %d: %+v", len(dls), len(want), dls)
	}
	// The load's dead letters share a record, across its batches.
	if dls[0].Seq != dls[2].Seq || dls[2].Index != 2 {
		t.Errorf("the dead letters of one load are at %v, %v, %v: want one record", dls[0].Cursor(), dls[1].Cursor(), dls[2].Cursor())
	}
	for i, w := range want {
		d := dls[i]
		if d.Field != w.field || !strings.Contains(d.Reason, w.reason) || d.Source != "file:events.ndjson" {
			t.Errorf("dead letter %d: field %q reason %q source %q, want %q ~%q", i, d.Field, d.Reason, d.Source, w.field, w.reason)
		}
		if got := bytes.HasPrefix(d.Payload, []byte(`{"truncated":true`)); got != w.truncated || bytes.Contains(d.Payload, []byte("secret-")) {
			t.Errorf("dead letter %d: payload (truncated %v, want %v) %.200s", i, got, w.truncated, d.Payload)
		}
		if b, _ := json.Marshal(d); len(b) > 1<<20 {
			t.Errorf("dead letter %d is %d bytes", i, len(b))
		}
	}

	// A replay keeps every letter (none became valid; the two cut to their
	// head can never be replayed) and stores nothing.
	code, out = runCmd(t, "dlq", "replay", "--config", cfgPath, "--stream", "orders")
	if code != 0 || !strings.Contains(out, "replayed=0 kept=1 unreplayable=2") {
		t.Fatalf("braid dlq replay: exit %d, output %q", code, out)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 3 {
		t.Fatalf("after replay %d dead letters (%v), want 3", n, err)
	}
	if got := storedIDs(t, js, l); len(got) != 4 {
		t.Fatalf("after replay stored %v", got)
	}
}

// storedIDs reads the orders log and returns the ids, in log order.
func storedIDs(t *testing.T, js jetstream.JetStream, l *eventlog.Log) []string {
	t.Helper()
	ids := []string{}
	for i, data := range testenv.StoredEvents(t, js, l.StreamName("orders", 0)) {
		var rec struct {
			ID string `json:"order_id"`
		}
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		ids = append(ids, rec.ID)
	}
	return ids
}
