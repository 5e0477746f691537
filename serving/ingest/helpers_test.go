package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// The event log is the use case's log.
var _ ingest.Log = (*eventlog.Log)(nil)

// testStream: ts, id, country (nullable), device (required), amount
// (nullable float), items (nullable int), email (PII hash).
func testStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt, "email": logic.TypeString},
		Required: []string{"device"}, PII: map[string]logic.PIIMode{"email": logic.PIIHash}, AllowedLateness: 30 * time.Second}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testCatalog is a catalog of the given streams.
func testCatalog(streams ...*logic.Stream) *config.Catalog {
	cat := &config.Catalog{Streams: map[string]*logic.Stream{}, Views: map[string]*logic.View{}}
	for _, s := range streams {
		cat.Streams[s.Name] = s
		cat.StreamOrder = append(cat.StreamOrder, s.Name)
	}
	return cat
}

// openLog opens a log of the given streams on a NATS server of its own.
func openLog(t *testing.T, opts eventlog.Options, streams ...string) *eventlog.Log {
	t.Helper()
	_, js := testenv.StartNATS(t).JetStream(t)
	opts.Namespace = testenv.Namespace(t)
	if opts.DedupWindow == 0 {
		opts.DedupWindow = time.Minute
	}
	l, err := eventlog.Open(context.Background(), js, streams, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// listAll reads every dead letter of a stream.
func listAll(t *testing.T, l *eventlog.Log, stream string) []eventlog.DeadLetter {
	t.Helper()
	var all []eventlog.DeadLetter
	var after eventlog.Cursor
	for {
		page, err := l.DeadLetters(context.Background(), stream, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Cursor()
	}
}

// counterValue is the value of a counter with the given labels (a subset).
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := true
			for _, lp := range m.GetLabel() {
				if want, has := labels[lp.GetName()]; has && want != lp.GetValue() {
					ok = false
				}
			}
			if ok {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}
