package main

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
)

func TestMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	noEnv := func(string) string { return "" }

	cfg := config.Default()
	if got := applyMemoryLimit(&cfg, noEnv, quiet); got != defaults.MemoryLimit || debug.SetMemoryLimit(-1) != defaults.MemoryLimit {
		t.Errorf("default: applied %d, runtime %d; want %d", got, debug.SetMemoryLimit(-1), defaults.MemoryLimit)
	}
	cfg.MemoryLimit = 0
	if got := applyMemoryLimit(&cfg, noEnv, quiet); got != math.MaxInt64 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Errorf("memory_limit 0: applied %d, runtime %d; want no limit", got, debug.SetMemoryLimit(-1))
	}
	// GOMEMLIMIT was applied by the runtime at start and wins: whatever
	// limit the runtime holds stays.
	debug.SetMemoryLimit(300 << 20)
	cfg.MemoryLimit = 1 << 30
	gomem := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "300MiB"
		}
		return ""
	}
	if got := applyMemoryLimit(&cfg, gomem, quiet); got != 300<<20 || debug.SetMemoryLimit(-1) != 300<<20 {
		t.Errorf("with GOMEMLIMIT: applied %d, runtime %d; want 300 MiB kept", got, debug.SetMemoryLimit(-1))
	}
}

func TestNearLimit(t *testing.T) {
	for _, c := range []struct {
		live, limit int64
		want        bool
	}{
		{100 << 20, math.MaxInt64, false}, // no limit
		{300 << 20, 384 << 20, false},
		{346 << 20, 384 << 20, true}, // above 90%
		{500 << 20, 384 << 20, true}, // over it
	} {
		if got := nearLimit(c.live, c.limit); got != c.want {
			t.Errorf("nearLimit(%d, %d) = %v", c.live, c.limit, got)
		}
	}
}
