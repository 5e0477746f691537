package workqueue_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/workqueue"
	"github.com/braid-data/braid/tests/testenv"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// answer is what a task's result must be: computed from its payload
// alone, independently of the queue.
func answer(data []byte) []byte { return []byte("done:" + strings.ToUpper(string(data))) }

func tasks(n int) []workqueue.Task {
	out := make([]workqueue.Task, n)
	for i := range out {
		out[i] = workqueue.Task{ID: fmt.Sprintf("view/%03d", i), Data: []byte(fmt.Sprintf("unit-%d", i))}
	}
	return out
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func open(t *testing.T, js jetstream.JetStream, ns string, opts workqueue.Options) *workqueue.Queue {
	t.Helper()
	opts.Namespace, opts.Logger = ns, quiet()
	q, err := workqueue.Open(context.Background(), js, opts)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// collect submits and returns the results by task id, failing on a second
// result for one task.
func collect(t *testing.T, ctx context.Context, q *workqueue.Queue, run string, ts []workqueue.Task) (map[string]workqueue.Result, error) {
	t.Helper()
	got := map[string]workqueue.Result{}
	err := q.Submit(ctx, run, ts, func(r workqueue.Result) {
		if _, dup := got[r.ID]; dup {
			t.Errorf("second result for %s", r.ID)
		}
		got[r.ID] = r
	})
	return got, err
}

func checkAnswers(t *testing.T, ts []workqueue.Task, got map[string]workqueue.Result) {
	t.Helper()
	if len(got) != len(ts) {
		t.Fatalf("%d results for %d tasks", len(got), len(ts))
	}
	for _, tk := range ts {
		r := got[tk.ID]
		if r.Err != "" || string(r.Data) != string(answer(tk.Data)) {
			t.Fatalf("task %s: result %q err %q, want %q", tk.ID, r.Data, r.Err, answer(tk.Data))
		}
	}
}

func TestSubmitServeTwoWorkers(t *testing.T) {
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	q := open(t, connect(t, n.URL), ns, workqueue.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two workers, each with its own connection, share the tasks.
	var mu sync.Mutex
	by := map[string]string{} // task -> worker
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		w := open(t, connect(t, n.URL), ns, workqueue.Options{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = w.Serve(ctx, 2, func(_ context.Context, tk workqueue.Task) ([]byte, error) {
				mu.Lock()
				if prev, ok := by[tk.ID]; ok {
					t.Errorf("task %s handled by %s and %s", tk.ID, prev, name)
				}
				by[tk.ID] = name
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				return answer(tk.Data), nil
			})
		}()
	}
	ts := tasks(40)
	got, err := collect(t, ctx, q, "20240501T000000.000000Z-aaaaaa", ts)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, ts, got)
	// Submitting the same run again queues nothing twice and answers
	// from the stored results.
	again, err := collect(t, ctx, q, "20240501T000000.000000Z-aaaaaa", ts)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, ts, again)
	if len(by) != len(ts) {
		t.Fatalf("%d tasks handled, want %d", len(by), len(ts))
	}
	cancel()
	wg.Wait()
	// Nothing is left in the work queue.
	js := connect(t, n.URL)
	st, err := js.Stream(context.Background(), ns+"_batch_units")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil || info.State.Msgs != 0 {
		t.Fatalf("units left: %+v %v", info.State, err)
	}
}

func TestFailuresRetriedThenErrorResult(t *testing.T) {
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	q := open(t, connect(t, n.URL), ns, workqueue.Options{MaxDeliver: 3})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	attempts := map[string][]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = q.Serve(ctx, 1, func(_ context.Context, tk workqueue.Task) ([]byte, error) {
			mu.Lock()
			attempts[tk.ID] = append(attempts[tk.ID], tk.Attempt)
			mu.Unlock()
			switch {
			case strings.HasSuffix(tk.ID, "flaky") && tk.Attempt == 1:
				return nil, errors.New("transient")
			case strings.HasSuffix(tk.ID, "broken"):
				return nil, errors.New("always broken")
			}
			return answer(tk.Data), nil
		})
	}()
	ts := []workqueue.Task{{ID: "v/ok", Data: []byte("a")}, {ID: "v/flaky", Data: []byte("b")}, {ID: "v/broken", Data: []byte("c")}}
	got, err := collect(t, ctx, q, "run-1", ts)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, ts[:2], map[string]workqueue.Result{"v/ok": got["v/ok"], "v/flaky": got["v/flaky"]})
	if r := got["v/broken"]; r.Err == "" || !strings.Contains(r.Err, "always broken") || !strings.Contains(r.Err, "attempt 3 of 3") {
		t.Fatalf("broken task result %+v", r)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts["v/flaky"]) != "[1 2]" || fmt.Sprint(attempts["v/broken"]) != "[1 2 3]" || fmt.Sprint(attempts["v/ok"]) != "[1]" {
		t.Fatalf("attempts %v", attempts)
	}
}

func TestSubmitCancelledWithdrawsTasks(t *testing.T) {
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	js := connect(t, n.URL)
	q := open(t, js, ns, workqueue.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// No worker: cancel once the tasks are queued.
		st, _ := js.Stream(context.Background(), ns+"_batch_units")
		for {
			if info, err := st.Info(context.Background()); err == nil && info.State.Msgs == 5 {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, err := collect(t, ctx, q, "run-x", tasks(5))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("submit: %v, want context.Canceled", err)
	}
	st, _ := js.Stream(context.Background(), ns+"_batch_units")
	info, err := st.Info(context.Background())
	if err != nil || info.State.Msgs != 0 {
		t.Fatalf("units left after a cancelled submit: %+v %v", info.State, err)
	}
}

// TestHelperWorker is a worker process for the kill tests: it takes one
// task, says so, and hangs until it is killed.
func TestHelperWorker(t *testing.T) {
	url := os.Getenv("WORKQUEUE_HELPER_URL")
	if url == "" {
		t.Skip("helper process only")
	}
	ackWait, _ := time.ParseDuration(os.Getenv("WORKQUEUE_HELPER_ACKWAIT"))
	maxDeliver, _ := strconv.Atoi(os.Getenv("WORKQUEUE_HELPER_MAXDELIVER"))
	js := connect(t, url)
	q := open(t, js, os.Getenv("WORKQUEUE_HELPER_NS"), workqueue.Options{AckWait: ackWait, MaxDeliver: maxDeliver})
	_ = q.Serve(context.Background(), 1, func(ctx context.Context, tk workqueue.Task) ([]byte, error) {
		if err := js.Conn().Publish("helper.took", []byte(tk.ID)); err != nil {
			return nil, err
		}
		_ = js.Conn().Flush()
		<-ctx.Done() // hang (heartbeats keep the task) until killed
		return nil, ctx.Err()
	})
}

type killRun struct {
	victim  string                      // the task the killed worker held
	got     map[string]workqueue.Result // the run's results
	handled map[string]int              // task -> attempt, by the healthy worker
	left    uint64                      // tasks left in the queue
}

// killMidTask runs six tasks: a worker process takes one and is killed
// with SIGKILL while it handles it; then a healthy worker serves.
func killMidTask(t *testing.T, maxDeliver int) killRun {
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	js := connect(t, n.URL)
	const ackWait = 2 * time.Second
	opts := workqueue.Options{AckWait: ackWait, MaxDeliver: maxDeliver}
	q := open(t, js, ns, opts)
	took := make(chan string, 1)
	sub, err := js.Conn().Subscribe("helper.took", func(m *nats.Msg) {
		select {
		case took <- string(m.Data):
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = js.Conn().Flush()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorker$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WORKQUEUE_HELPER_URL="+n.URL, "WORKQUEUE_HELPER_NS="+ns, "WORKQUEUE_HELPER_ACKWAIT="+ackWait.String(), "WORKQUEUE_HELPER_MAXDELIVER="+strconv.Itoa(maxDeliver))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type out struct {
		got map[string]workqueue.Result
		err error
	}
	res := make(chan out, 1)
	go func() {
		got, err := collect(t, ctx, q, "run-kill", tasks(6))
		res <- out{got, err}
	}()
	var k killRun
	select {
	case k.victim = <-took:
	case <-time.After(2 * time.Minute):
		t.Fatal("the helper worker took no task")
	}
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var mu sync.Mutex
	k.handled = map[string]int{}
	wctx, wcancel := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		w := open(t, connect(t, n.URL), ns, opts)
		_ = w.Serve(wctx, 1, func(_ context.Context, tk workqueue.Task) ([]byte, error) {
			mu.Lock()
			k.handled[tk.ID] = tk.Attempt
			mu.Unlock()
			return answer(tk.Data), nil
		})
	}()
	o := <-res
	if o.err != nil {
		t.Fatal(o.err)
	}
	k.got = o.got
	// The last answer may come before its acknowledgement: wait (a
	// generous deadline) for the queue to be empty.
	st, err := js.Stream(context.Background(), ns+"_batch_units")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if k.left = info.State.Msgs; k.left == 0 || time.Now().After(deadline) {
			break
		}
	}
	wcancel()
	<-wdone
	return k
}

// A worker process killed with SIGKILL in the middle of a task loses
// nothing: the task goes to another worker after the ack wait and the run
// completes with every correct answer.
func TestWorkerKilledMidTask(t *testing.T) {
	k := killMidTask(t, 5)
	checkAnswers(t, tasks(6), k.got)
	if k.handled[k.victim] < 2 {
		t.Fatalf("the killed worker's task %s was handled on attempt %d, want a redelivery (>= 2): %v", k.victim, k.handled[k.victim], k.handled)
	}
	if k.left != 0 {
		t.Fatalf("%d tasks left in the queue", k.left)
	}
	t.Logf("task %s redelivered after the kill (attempt %d)", k.victim, k.handled[k.victim])
}

// When the killed worker held a task's last delivery, the run still ends:
// that task gets an error result (from the server's max-deliveries
// advisory) and leaves the queue; the others are answered.
func TestLastHolderKilled(t *testing.T) {
	k := killMidTask(t, 1)
	ts := tasks(6)
	var rest []workqueue.Task
	for _, tk := range ts {
		if tk.ID != k.victim {
			rest = append(rest, tk)
		}
	}
	r := k.got[k.victim]
	delete(k.got, k.victim)
	checkAnswers(t, rest, k.got)
	if r.Err == "" || !strings.Contains(r.Err, "no worker answered") {
		t.Fatalf("the victim's result %+v, want an error", r)
	}
	if _, ok := k.handled[k.victim]; ok || k.left != 0 {
		t.Fatalf("the victim was handed out again (%v) or tasks are left (%d)", k.handled, k.left)
	}
}

// A task that takes longer than the ack wait stays with its worker (it
// says it is in progress) and is handled once, though another worker
// waits for work.
func TestLongTaskKeptByHeartbeats(t *testing.T) {
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	const ackWait = 2 * time.Second
	q := open(t, connect(t, n.URL), ns, workqueue.Options{AckWait: ackWait})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var attempts []int
	var wg sync.WaitGroup
	for range 2 {
		w := open(t, connect(t, n.URL), ns, workqueue.Options{AckWait: ackWait})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = w.Serve(ctx, 1, func(_ context.Context, tk workqueue.Task) ([]byte, error) {
				mu.Lock()
				attempts = append(attempts, tk.Attempt)
				mu.Unlock()
				time.Sleep(3 * ackWait)
				return answer(tk.Data), nil
			})
		}()
	}
	ts := tasks(1)
	got, err := collect(t, ctx, q, "run-long", ts)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, ts, got)
	cancel()
	wg.Wait()
	if fmt.Sprint(attempts) != "[1]" {
		t.Fatalf("attempts %v, want the one first delivery", attempts)
	}
}

// capture is a slog handler keeping the messages it is given.
type capture struct {
	mu   sync.Mutex
	msgs []string
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, r.Message)
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func (c *capture) has(prefix string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// Without workers, a submitter says what it waits for.
func TestSubmitLogsWhileNoWorkerAnswers(t *testing.T) {
	n := testenv.StartNATS(t)
	logs := &capture{}
	q, err := workqueue.Open(context.Background(), connect(t, n.URL), workqueue.Options{Namespace: testenv.Namespace(t), Progress: 50 * time.Millisecond, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for deadline := time.Now().Add(time.Minute); !logs.has("waiting for batch workers: 3 of 3 units pending") && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	if err := q.Submit(ctx, "run-idle", tasks(3), func(workqueue.Result) { t.Error("a result without workers") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("submit: %v", err)
	}
	if !logs.has("waiting for batch workers: 3 of 3 units pending") {
		t.Fatalf("logs %v", logs.msgs)
	}
}
