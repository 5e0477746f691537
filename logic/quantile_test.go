package logic

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

func TestQuantileBucketsHoldTheirValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	prev := int32(math.MinInt32)
	xs := []float64{0, 1e-12, -1e-12}
	for i := 0; i < 20000; i++ {
		xs = append(xs, math.Exp(rng.NormFloat64()*8)*float64(1-2*rng.IntN(2)))
	}
	sort.Float64s(xs)
	for _, x := range xs {
		k := QuantileBucket(x)
		if k < prev {
			t.Fatalf("keys do not order like values at %v", x)
		}
		prev = k
		v := QuantileValue(k)
		if math.Abs(x) >= quantileMin && math.Abs(v-x) > QuantileAlpha*math.Abs(x)*(1+1e-9) {
			t.Fatalf("value %v in bucket %d, representative %v: beyond α", x, k, v)
		}
	}
}

func TestQuantileSketchWithinAlphaOfTheRank(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 20; trial++ {
		n := 1 + rng.IntN(5000)
		xs := make([]float64, n)
		s := QuantileSketch{}
		a, b := QuantileSketch{}, QuantileSketch{}
		for i := range xs {
			xs[i] = math.Round(rng.ExpFloat64()*1000*100) / 100
			s.Add(xs[i])
			if i%2 == 0 {
				a.Add(xs[i])
			} else {
				b.Add(xs[i])
			}
		}
		a.Merge(b)
		sort.Float64s(xs)
		for _, q := range []float64{0, 0.5, 0.9, 0.95, 0.99, 1} {
			got := s.Quantile(q)
			if a.Quantile(q) != got {
				t.Fatalf("merged sketch disagrees at q=%v", q)
			}
			exact := xs[int(q*float64(n-1))] // the value of rank q·(n-1), rounded down
			if exact != 0 && math.Abs(got-exact) > QuantileAlpha*exact*(1+1e-9) {
				t.Fatalf("n=%d q=%v: sketch %v, value of the rank %v", n, q, got, exact)
			}
		}
	}
	if !math.IsNaN((QuantileSketch{}).Quantile(0.5)) {
		t.Fatal("empty sketch should have no quantile")
	}
}
