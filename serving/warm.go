package serving

import (
	"context"
	"time"
)

// warmVersions loads each new batch version's view files as soon as it is
// published, so that the first query after a batch run does not pay for
// reading a large view file, and lets go of the files of older versions.
// It checks the current version every period until ctx ends.
func (s *Server) warmVersions(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	seen := ""
	for {
		if ver, err := s.opts.Views.Current(); err == nil && ver != nil && ver.ID != seen {
			start := time.Now()
			for _, name := range s.opts.Catalog.ViewOrder {
				if vv, ok := ver.Views[name]; !ok || vv.Definition != s.opts.Catalog.Views[name].Definition() {
					continue
				}
				if _, err := s.opts.Views.Rows(ctx, ver, s.opts.Catalog.Views[name], 0, 0); err != nil {
					s.logger.Warn("load batch view", "view", name, "version", ver.ID, "err", err)
				}
			}
			s.opts.Views.KeepOnly(ver)
			s.logger.Debug("batch views loaded", "version", ver.ID, "took", time.Since(start))
			seen = ver.ID
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
