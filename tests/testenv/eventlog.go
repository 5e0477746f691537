package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/eventlog"
)

// OpenLog opens an event log of the given streams on a NATS server of its
// own, in the test's namespace (opts.Namespace is overwritten) and with a
// dedup window of a minute unless opts sets one.
func OpenLog(t testing.TB, opts eventlog.Options, streams ...string) *eventlog.Log {
	t.Helper()
	_, js := StartNATS(t).JetStream(t)
	opts.Namespace = Namespace(t)
	if opts.DedupWindow == 0 {
		opts.DedupWindow = time.Minute
	}
	l, err := eventlog.Open(context.Background(), js, streams, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
