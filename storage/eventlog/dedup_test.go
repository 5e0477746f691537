package eventlog

import (
	"fmt"
	"testing"
)

// TestIDWindow checks the window against a plain map of store times over
// a long run with ids coming back at every distance from the window: an
// id is seen while it was stored less than the window before, the table
// stays proportional to the live ids, remove forgets, and the table
// shrinks once its ids expired.
func TestIDWindow(t *testing.T) {
	const window = 1000
	w := newIDWindow(window)
	stored := map[string]int64{} // the oracle: id -> when stored
	now := int64(1_000_000)
	maxSlots := 0
	for step := range 200_000 {
		now += int64(step % 3)
		id := fmt.Sprint("id-", (step*7919)%3000)
		k := w.key(id)
		t0, ok := stored[id]
		want := ok && t0 > now-window
		if got := w.seenOrAdd(k, now); got != want {
			t.Fatalf("step %d: seen(%s) at %d = %v, want %v (stored at %d, %v)", step, id, now, got, want, t0, ok)
		}
		if !want {
			stored[id] = now
		}
		if step%97 == 0 { // a failed write: recorded, then forgotten
			gone := w.key(fmt.Sprint("failed-", step))
			if w.seenOrAdd(gone, now) {
				t.Fatalf("step %d: a new id is seen", step)
			}
			w.remove(gone)
			if w.seenOrAdd(gone, now) {
				t.Fatalf("step %d: a removed id is still seen", step)
			}
			w.remove(gone)
		}
		w.expire(now)
		if step > 100_000 {
			maxSlots = max(maxSlots, w.slotCount())
		}
	}
	live := 0
	for _, t0 := range stored {
		if t0 > now-window {
			live++
		}
	}
	if got := w.len(now); got != live {
		t.Fatalf("%d ids live, want %d", got, live)
	}
	if maxSlots > 8*live+idShards*minSlots {
		t.Fatalf("table of %d slots for about %d live ids", maxSlots, live)
	}
	// Loading from a log: older times first, later ones win, ids older
	// than the window are not kept.
	l := newIDWindow(window)
	a, b := l.key("a"), l.keyBytes([]byte("b"))
	if b != l.key("b") {
		t.Fatal("an id's key differs as string and as bytes (the writer and the rebuild would disagree)")
	}
	l.add(a, 10_000)
	l.add(a, 10_500)
	l.add(b, 10_600)
	l.add(a, 10_100)
	if !l.seenOrAdd(a, 11_400) || l.seenOrAdd(a, 11_500) != false || !l.seenOrAdd(b, 11_599) || l.seenOrAdd(b, 11_600) {
		t.Fatal("loaded times: a stored at 10500 is seen until 11500, b at 10600 until 11600")
	}
	// Everything expires: the table shrinks.
	big := newIDWindow(window)
	for i := range 50_000 {
		big.seenOrAdd(big.key(fmt.Sprint(i)), 1_000_000)
	}
	grown := big.slotCount()
	big.expire(1_000_000 + 5*window)
	if big.slotCount() >= grown || big.len(1_000_000+5*window) != 0 {
		t.Fatalf("after expiry: %d slots (was %d), %d live", big.slotCount(), grown, big.len(1_000_000+5*window))
	}
}
