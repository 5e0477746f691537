package serving

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
)

// costTimeout bounds one measurement of every view's speed cost.
const costTimeout = 30 * time.Second

// measuredCost is a view's speed cost as last measured.
type measuredCost struct {
	SpeedCost
	At time.Time // when it was measured
}

// costs keeps what each view's speed state costs in Redis, measured on
// demand (a scrape of /metrics, /v1/status) at most once per period: a
// caller gets the last measurement at once and, when it is older than the
// period, starts the next one in the background; only the first caller
// waits for one. A view whose measurement failed keeps its previous
// figures (none before the first success). So Redis does the work of one
// measurement per period whatever the number of scrapers, and none while
// nobody asks. Safe for concurrent use.
type costs struct {
	src    SpeedUsage
	cat    *config.Catalog
	every  time.Duration
	logger *slog.Logger
	bg     context.Context // the server's: its end stops a measurement

	mu      sync.Mutex
	last    map[string]measuredCost // by view
	at      time.Time               // when the last measurement began (zero: none yet)
	running chan struct{}           // closed when the measurement in progress ends; nil: none
}

func newCosts(src SpeedUsage, cat *config.Catalog, every time.Duration, logger *slog.Logger, bg context.Context) *costs {
	if every <= 0 {
		every = defaults.SpeedCostEvery
	}
	return &costs{src: src, cat: cat, every: every, logger: logger, bg: bg, last: map[string]measuredCost{}}
}

// get returns every view's last measured cost (a view absent: unknown),
// starting a measurement when the last began a period ago or more; before
// any has ended it waits for the first (at most until ctx ends).
func (c *costs) get(ctx context.Context) map[string]measuredCost {
	c.mu.Lock()
	first := c.at.IsZero()
	if c.running == nil && time.Since(c.at) >= c.every {
		c.at = time.Now()
		c.running = make(chan struct{})
		go c.measure(c.running)
	}
	done := c.running
	c.mu.Unlock()
	if first && done != nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.last)
}

// measure measures every view's cost, one after the other, then closes
// done.
func (c *costs) measure(done chan struct{}) {
	defer func() {
		c.mu.Lock()
		c.running = nil
		c.mu.Unlock()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(c.bg, costTimeout)
	defer cancel()
	for _, name := range c.cat.ViewOrder {
		cost, err := c.src.SpeedUsage(ctx, c.cat.Views[name])
		if err != nil {
			if ctx.Err() == nil {
				c.logger.Warn("measure a view's speed cost in Redis", "view", name, "err", err)
			}
			continue
		}
		c.mu.Lock()
		c.last[name] = measuredCost{SpeedCost: cost, At: time.Now()}
		c.mu.Unlock()
	}
}
