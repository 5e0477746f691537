package logic_test

import (
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

func TestRetainedFrom(t *testing.T) {
	day := 24 * time.Hour
	for _, c := range []struct {
		retention time.Duration
		now       string
		want      string
	}{
		{0, "2026-12-07T18:00:00Z", ""},
		{-day, "2026-12-07T18:00:00Z", ""},
		{day, "2026-12-07T18:00:00Z", "2026-12-06"},
		{day, "2026-12-07T00:00:00Z", "2026-12-06"},
		{day, "2026-12-06T23:59:59.999Z", "2026-12-05"},
		{400 * day, "2026-12-07T18:00:00Z", "2025-11-02"},
		{36 * time.Hour, "2026-03-01T06:00:00Z", "2026-02-27"},
		// The date is UTC's, whatever the zone now is written in.
		{day, "2026-12-07T01:00:00+02:00", "2026-12-05"},
	} {
		now, err := time.Parse(time.RFC3339Nano, c.now)
		if err != nil {
			t.Fatal(err)
		}
		if got := logic.RetainedFrom(c.retention, now); got != c.want {
			t.Errorf("RetainedFrom(%v, %s) = %q, want %q", c.retention, c.now, got, c.want)
		}
	}
}
