package alerts

import (
	"context"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/alertbox"
)

// The interfaces the alerts consume. (*query.Engine) is the Source;
// (*alertbox.Box) is the Outbox, Deliveries, DeadLetterQueue and Journal.

// Source is the merged rows of views (the query engine).
//
// Watch returns a channel that receives (coalesced) whenever the answers
// of the stream's views may have changed — a speed-layer commit, a new
// batch version — and a stop function. Rows answers a query as rows, with
// the batch version, watermark and latest arrival they were computed at;
// an error means the view cannot answer now (rebuilding, a store
// unreachable): the evaluation is tried again later. Both are safe for
// concurrent use.
type Source interface {
	Watch(stream string) (<-chan struct{}, func())
	Rows(ctx context.Context, v *logic.View, q query.Query) (query.RowsAnswer, error)
}

// Outbox stores decisions durably.
//
// Publish returns once the record is stored (an error: it may or may not
// be; publishing it again with the same id stores it once within the
// outbox's dedup window). Records calls fn in storage order with the
// alert's records stored since a time, and returns once it reached the
// last one stored when it began. Safe for concurrent use.
type Outbox interface {
	Publish(ctx context.Context, r alertbox.Record) error
	Records(ctx context.Context, alert string, since time.Time, fn func(alertbox.Record) error) error
}

// Deliveries hands the outbox's deliveries to this process's workers.
//
// Consume calls handle for each delivery, at most parallel at once, each
// in its own goroutine, until ctx ends; it returns once every handle
// returned. A delivery is shared by every process's Consume (each goes to
// one at a time) and handed out again, with Attempt one higher, unless
// handle ends it with Done, or with Retry (after the delay) or Dead (kept
// in the alert's dead-letter queue). Notify publishes a body on a NATS
// subject and returns once the server has it.
type Deliveries interface {
	Consume(ctx context.Context, parallel int, handle func(context.Context, *alertbox.Delivery)) error
	Notify(ctx context.Context, subject, id string, body []byte) error
}

// DeadLetterQueue is the alerts' dead letters: listed oldest first (limit
// 0: all), replayed (put back in the outbox with their ids; the count put
// back), and counted per alert. Safe for concurrent use.
type DeadLetterQueue interface {
	DeadLetters(ctx context.Context, alert string, limit int) ([]alertbox.DeadLetter, error)
	Replay(ctx context.Context, alert string) (int, error)
	DeadLetterCounts(ctx context.Context) (map[string]uint64, error)
}

// Journal keeps what GET /v1/alerts shows, shared by every process: the
// recent outcomes of each alert's deliveries (Log, Recent: oldest first,
// a bounded number), and the rows firing now as its evaluator last wrote
// them (SetState, State: nil when none). Safe for concurrent use.
type Journal interface {
	Log(ctx context.Context, alert string, o alertbox.Outcome) error
	Recent(ctx context.Context, alert string) ([]alertbox.Outcome, error)
	SetState(ctx context.Context, alert string, data []byte) error
	State(ctx context.Context, alert string) ([]byte, error)
}

// Shares gives each alert to one evaluating process at a time (leases
// shared through Redis: storage/leases, role "alerts").
//
// Run calls work for every alert this process comes to own, each in its
// own goroutine, with a context that ends when it must give the alert up
// (another process took it, ctx ended); a work that returns early is
// started again after a pause while the alert is still this process's.
// Run returns once ctx ended and every work returned. Two processes may
// briefly both evaluate an alert: their decisions carry the same ids.
type Shares interface {
	Run(ctx context.Context, alerts []string, work func(ctx context.Context, alert string) error) error
}
