package main

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/braid-data/braid/logic/config"
)

// applyMemoryLimit sets the Go runtime's soft memory limit to memory_limit
// (0: none). GOMEMLIMIT, the runtime's own variable, wins when set: the
// runtime applied it at start and it is left alone. It returns the limit
// in effect (math.MaxInt64: none).
func applyMemoryLimit(cfg *config.Config, getenv func(string) string, logger *slog.Logger) int64 {
	if v := getenv("GOMEMLIMIT"); v != "" {
		limit := debug.SetMemoryLimit(-1)
		logger.Info("memory limit from GOMEMLIMIT (memory_limit ignored)", "GOMEMLIMIT", v, "bytes", limit)
		return limit
	}
	if cfg.MemoryLimit <= 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return math.MaxInt64
	}
	debug.SetMemoryLimit(cfg.MemoryLimit)
	logger.Debug("memory limit", "bytes", cfg.MemoryLimit)
	return cfg.MemoryLimit
}

// nearLimit reports whether the live heap is within a tenth of the memory
// limit: the collector then runs nearly all the time and slows the process
// down instead of letting memory grow.
func nearLimit(live, limit int64) bool {
	return limit != math.MaxInt64 && live > limit-limit/10
}

// watchMemory warns, at most every 10 minutes, while the live heap is near
// the memory limit, naming what to change. It returns when ctx ends.
func (a *app) watchMemory(ctx context.Context) {
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	var warned time.Time
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(s)
		live, limit := int64(s[0].Value.Uint64()), debug.SetMemoryLimit(-1)
		if nearLimit(live, limit) && time.Since(warned) >= 10*time.Minute {
			warned = time.Now()
			a.logger.Warn("live memory is near memory_limit: the collector slows this process down; raise memory_limit "+
				"(JetStream's dedup state, about 110 bytes per event id kept for nats.dedup_window, counts in braid up)",
				"live_bytes", live, "memory_limit", limit)
		}
	}
}
