package config

import (
	"strings"
	"testing"
	"time"
)

// formatDuration writes what ParseDuration reads back, in the largest unit
// that counts the duration whole at least twice.
func TestFormatDurationReadsBack(t *testing.T) {
	units := []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second, time.Millisecond}
	for _, d := range []time.Duration{
		time.Millisecond, 25 * time.Millisecond, 500 * time.Millisecond, 1500 * time.Millisecond,
		time.Second, 5 * time.Second, 10 * time.Second, time.Minute, 90 * time.Second, 2 * time.Minute,
		15 * time.Minute, time.Hour, 36 * time.Hour, 24 * time.Hour, 48 * time.Hour, 7 * 24 * time.Hour,
	} {
		s := formatDuration(d)
		got, err := ParseDuration(s)
		if err != nil || got != d {
			t.Errorf("%v: wrote %q, read back %v (%v)", d, s, got, err)
		}
		// No larger unit counts d whole at least twice.
		num := strings.TrimRight(s, "dhms")
		unit := s[len(num):]
		for _, u := range units {
			if u <= time.Second || d%u != 0 || d/u < 2 {
				continue
			}
			if big := map[string]time.Duration{"d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second, "ms": time.Millisecond}[unit]; big < u {
				t.Errorf("%v: wrote %q, but %v counts it whole %d times", d, s, u, d/u)
			}
			break
		}
	}
}
