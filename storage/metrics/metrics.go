// Package metrics holds what every layer's Prometheus metrics share: how a
// collector is registered so that two components (or two instances of one)
// on the same registry share one set of series.
package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg and returns it, or returns the collector of
// the same type already registered under the same name (a second component
// on one registry shares the metrics). A nil reg registers nothing and
// returns c. Any other registration error (a name reused with other labels
// or help) is returned, wrapped.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}
