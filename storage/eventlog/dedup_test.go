package eventlog

import (
	"fmt"
	"testing"
)

// TestIDWindow checks the window against a plain map of last-stored times:
// an id is seen while it was stored less than the window before, expired
// generations are dropped whole, and remove forgets.
func TestIDWindow(t *testing.T) {
	const window = 1000
	w := newIDWindow(window)
	stored := map[string]int64{} // the oracle: id -> when stored
	now := int64(1_000_000)
	for step := range 5000 {
		now += int64(step%7) + 1
		id := fmt.Sprint("id-", (step*7919)%800)
		k := w.key([]byte(id))
		t0, ok := stored[id]
		want := ok && t0 > now-window
		if got := w.seen(k, now); got != want {
			t.Fatalf("step %d: seen(%s) at %d = %v, want %v (stored at %d, %v)", step, id, now, got, want, t0, ok)
		}
		if !want {
			w.add(k, now)
			stored[id] = now
		}
		if step%50 == 0 {
			w.expire(now)
			if len(w.gens) > 5 {
				t.Fatalf("step %d: %d generations for a window of 4", step, len(w.gens))
			}
		}
	}
	k := w.key([]byte("gone"))
	w.add(k, now)
	w.remove(k)
	if w.seen(k, now) {
		t.Fatal("a removed id is still seen")
	}
	w.expire(now + 2*window)
	if w.len() != 0 {
		t.Fatalf("%d ids left a window after the last store", w.len())
	}
}
