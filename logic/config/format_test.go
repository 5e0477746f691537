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

// Each section's validation reports errors under its own keys only, and
// Validate reports every one of them.
func TestSectionsReportTheirOwnKeys(t *testing.T) {
	c := Config{ // every value wrong
		HTTP:    HTTP{IngestMemoryBytes: -1, QueryCacheBytes: -1, QueryMaxCells: -1, QueryMaxRows: -1},
		NATS:    NATS{MaxMsgs: -1, MaxBytes: -1, TLSCert: "c"},
		Epoch:   Duration(time.Hour),
		Batch:   Batch{Every: Duration(time.Second), SettleTimeout: -1},
		Speed:   Speed{BatchSize: -1, MaxWait: -1, MaxCells: -1},
		Archive: Archive{MaxRows: -1, MaxBytes: -1, MaxDelay: -1},
		DLQ:     DLQ{MaxRecords: -1, MaxLate: -1},
		Auth:    Auth{Keys: []Key{{SHA256: "x", Scopes: []string{"nope"}}}},
		Streams: map[string]StreamConfig{"s": {}},
		Views:   Views{Names: []string{"v"}, ByName: map[string]ViewConfig{"v": {Stream: "t"}}},

		MemoryLimit: -1,
	}
	streams, streamIssues := c.validateStreams()
	sections := []struct {
		keys   []string // the keys it may report, or their prefixes ending in "."
		issues issues
	}{
		{[]string{"data_dir", "namespace", "epoch"}, c.validateTop()},
		{[]string{"batch."}, c.Batch.validate(c.Epoch.D())},
		{[]string{"speed."}, c.Speed.validate()},
		{[]string{"archive."}, c.Archive.validate()},
		{[]string{"nats."}, c.NATS.validate()},
		{[]string{"dlq."}, c.DLQ.validate()},
		{[]string{"http."}, c.HTTP.validate()},
		{[]string{"memory_limit"}, c.validateMemory()},
		{[]string{"auth."}, c.Auth.validate()},
		{[]string{"streams", "streams."}, streamIssues},
		{[]string{"views", "views."}, c.validateViews(streams)},
	}
	var all []string
	for _, s := range sections {
		if len(s.issues) == 0 {
			t.Errorf("%v: no error in a section where every value is wrong", s.keys)
		}
		for _, i := range s.issues {
			own := false
			for _, k := range s.keys {
				own = own || i.key == k || (strings.HasSuffix(k, ".") && strings.HasPrefix(i.key, k))
			}
			if !own {
				t.Errorf("%v reports %s: %s", s.keys, i.key, i.msg)
			}
			all = append(all, i.key+": "+i.msg)
		}
	}
	err := c.Validate()
	errs, ok := err.(*Errors)
	if !ok {
		t.Fatalf("Validate: %v", err)
	}
	var got []string
	for _, e := range errs.List {
		got = append(got, e.Key+": "+e.Msg)
	}
	if strings.Join(got, "\n") != strings.Join(all, "\n") {
		t.Errorf("Validate reports\n%s\nthe sections\n%s", strings.Join(got, "\n"), strings.Join(all, "\n"))
	}
}
