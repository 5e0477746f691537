package query

import (
	"context"
	"time"
)

// warmVersions loads each new batch version's view files as soon as it is
// published, so that the first query after a batch run does not pay for
// reading a large view file, and lets go of the files of older versions.
// It checks the current version every period until ctx ends.
func (e *Engine) warmVersions(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	seen := ""
	for {
		if ver, err := e.views.Current(); err == nil && ver != nil && ver.ID != seen {
			start := time.Now()
			for _, name := range e.cat.ViewOrder {
				if vv, ok := ver.Views[name]; !ok || vv.Definition != e.cat.Views[name].Definition() {
					continue
				}
				if _, err := e.views.Rows(ctx, ver, e.cat.Views[name], 0, 0); err != nil {
					e.logger.Warn("load batch view", "view", name, "version", ver.ID, "err", err)
				}
			}
			e.views.KeepOnly(ver)
			e.logger.Debug("batch views loaded", "version", ver.ID, "took", time.Since(start))
			seen = ver.ID
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
