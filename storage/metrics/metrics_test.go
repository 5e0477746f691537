package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterShares(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "braid_test_total", Help: "h"}
	a, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	b.Add(2)
	a.Inc()
	if a != b {
		t.Fatal("the second registration did not return the first collector")
	}
	mfs, _ := reg.Gather()
	if len(mfs) != 1 || mfs[0].Metric[0].Counter.GetValue() != 3 {
		t.Fatalf("gathered %v, want one counter at 3", mfs)
	}
	// The same name with other labels is an error, not a silent second series.
	if _, err := Register(reg, prometheus.NewCounterVec(opts, []string{"x"})); err == nil {
		t.Fatal("a conflicting registration was accepted")
	}
	// nil registers nothing.
	c := prometheus.NewCounter(opts)
	if got, err := Register[prometheus.Counter](nil, c); err != nil || got != c {
		t.Fatal("nil registry")
	}
}
