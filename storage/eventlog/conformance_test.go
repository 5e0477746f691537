package eventlog_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

var _ storagetest.LogWriter = (*eventlog.Log)(nil)

// TestConformance holds the JetStream log's writer to the event log
// writer's contract, on a nats-server of its own; Interrupt restarts it.
func TestConformance(t *testing.T) {
	storagetest.RunLogWriter(t, func(t *testing.T) storagetest.LogEnv {
		n := testenv.StartNATS(t)
		ns := testenv.Namespace(t)
		open := func() *eventlog.Log {
			_, js := n.JetStream(t)
			l, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: ns, DedupWindow: time.Minute, PublishTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		return storagetest.LogEnv{
			Open: func() storagetest.LogWriter { return open() },
			Stored: func(stream string) []eventlog.Record {
				_, js := n.JetStream(t)
				var out []eventlog.Record
				for _, data := range testenv.StoredMessages(t, js, open().StreamName(stream, 0)) {
					if err := eventlog.Unpack(data, func(_ int, id, rec []byte) error {
						out = append(out, eventlog.Record{ID: string(id), Data: slices.Clone(rec)})
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				}
				return out
			},
			Interrupt: func() { n.Restart(t) },
		}
	})
}
