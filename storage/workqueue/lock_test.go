package workqueue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/workqueue"
	"github.com/braid-data/braid/tests/testenv"
)

func lockOn(t *testing.T, url, ns, holder string, ttl, renew time.Duration) *workqueue.RunLock {
	t.Helper()
	l, err := workqueue.OpenRunLock(context.Background(), connect(t, url), workqueue.LockOptions{Namespace: ns, TTL: ttl, Renew: renew, Holder: holder, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitLock tries to take l until it succeeds (a generous deadline).
func waitLock(t *testing.T, l *workqueue.RunLock) func() {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		unlock, err := l.Lock()
		if err == nil {
			return unlock
		}
		if !errors.Is(err, batchviews.ErrLocked) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock was never free")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRunLockTwoHolders(t *testing.T) {
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	const ttl = 3 * time.Second
	a := lockOn(t, n.URL, ns, "a", ttl, 0)
	b := lockOn(t, n.URL, ns, "b", ttl, 0)
	unlockA, err := a.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(); !errors.Is(err, batchviews.ErrLocked) {
		t.Fatalf("b while a holds: %v, want ErrLocked", err)
	}
	if _, err := a.Lock(); !errors.Is(err, batchviews.ErrLocked) {
		t.Fatalf("a second Lock of a: %v, want ErrLocked", err)
	}
	if h, err := b.Holder(context.Background()); err != nil || h != "a" {
		t.Fatalf("holder %q %v", h, err)
	}
	// Released, it is b's to take at once.
	unlockA()
	unlockA() // idempotent
	unlockB, err := b.Lock()
	if err != nil {
		t.Fatalf("b after a released: %v", err)
	}
	if _, err := a.Lock(); !errors.Is(err, batchviews.ErrLocked) {
		t.Fatalf("a while b holds: %v", err)
	}
	unlockB()
	if h, err := a.Holder(context.Background()); err != nil || h != "" {
		t.Fatalf("holder after release %q %v", h, err)
	}
}

// A holder that renews keeps the lock past its TTL; one that stops
// renewing loses it to the next taker, and its late unlock leaves the new
// holder's lock alone.
func TestRunLockLeaseExpiry(t *testing.T) {
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	const ttl = 2 * time.Second
	renewing := lockOn(t, n.URL, ns, "renewing", ttl, 0)
	other := lockOn(t, n.URL, ns, "other", ttl, 0)
	unlock, err := renewing.Lock()
	if err != nil {
		t.Fatal(err)
	}
	// Well past the TTL the renewing holder still has it.
	time.Sleep(3 * ttl)
	if _, err := other.Lock(); !errors.Is(err, batchviews.ErrLocked) {
		t.Fatalf("after %s of renewals: %v, want ErrLocked", 3*ttl, err)
	}
	unlock()

	// A holder that never renews (it stopped, or hung).
	stalled := lockOn(t, n.URL, ns, "stalled", ttl, time.Hour)
	unlockStalled, err := stalled.Lock()
	if err != nil {
		t.Fatal(err)
	}
	unlockOther := waitLock(t, other) // after the lease lapsed
	if h, _ := other.Holder(context.Background()); h != "other" {
		t.Fatalf("holder %q, want other", h)
	}
	unlockStalled() // late: must not release other's lock
	if _, err := stalled.Lock(); !errors.Is(err, batchviews.ErrLocked) {
		t.Fatalf("after the stale unlock: %v, want ErrLocked (other holds it)", err)
	}
	unlockOther()
}
