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

// quantileContBySort is quantile_cont computed directly: sort the values,
// interpolate between the values of ranks floor and ceil of q·(n-1). It
// also returns those two values.
func quantileContBySort(xs []float64, q float64) (c, vlo, vhi float64) {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	r := q * float64(len(s)-1)
	lo, hi := int(math.Floor(r)), int(math.Ceil(r))
	vlo, vhi = s[lo], s[hi]
	return vlo + (r-float64(lo))*(vhi-vlo), vlo, vhi
}

// TestQuantileSketchEstimatesQuantileCont: over random inputs of every
// size from 1 to 10 values and larger ones, of positive, negative and
// mixed signs, with zeros and repeats, the sketch's quantile is within
// α·max(|v_lo|, |v_hi|) of quantile_cont computed by sorting, and within α
// of quantile_cont itself when the values have one sign; a sketch merged
// from two halves answers the same.
func TestQuantileSketchEstimatesQuantileCont(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	qs := []float64{0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1}
	value := func(sign int) float64 {
		var x float64
		switch rng.IntN(4) {
		case 0:
			x = math.Round(rng.ExpFloat64()*1000*100) / 100
		case 1:
			x = math.Exp(rng.NormFloat64() * 8) // many magnitudes
		case 2:
			x = float64(rng.IntN(5)) // repeats and zeros
		default:
			x = 1 + rng.Float64()
		}
		if x != 0 && x < quantileMin {
			x = quantileMin // below it counts as zero: kept out of the relative check
		}
		switch sign {
		case -1:
			return -x
		case 0: // mixed
			if rng.IntN(2) == 0 {
				return -x
			}
		}
		return x
	}
	checked := 0
	for trial := 0; trial < 3000; trial++ {
		n := 1 + trial%10
		if trial%100 == 99 {
			n = 1 + rng.IntN(5000)
		}
		sign := []int{1, -1, 0}[trial%3]
		xs := make([]float64, n)
		s, a, b := QuantileSketch{}, QuantileSketch{}, QuantileSketch{}
		for i := range xs {
			xs[i] = value(sign)
			s.Add(xs[i])
			if i%2 == 0 {
				a.Add(xs[i])
			} else {
				b.Add(xs[i])
			}
		}
		a.Merge(b)
		for _, q := range qs {
			got := s.Quantile(q)
			if m := a.Quantile(q); m != got {
				t.Fatalf("n=%d q=%v: merged sketch says %v, whole sketch %v", n, q, m, got)
			}
			c, vlo, vhi := quantileContBySort(xs, q)
			bound := QuantileAlpha * math.Max(math.Abs(vlo), math.Abs(vhi)) * (1 + 1e-9)
			if math.Abs(got-c) > bound {
				t.Fatalf("n=%d q=%v values %v: sketch %v, quantile_cont %v (ranks' values %v, %v): beyond %v", n, q, xs, got, c, vlo, vhi, bound)
			}
			if bound > QuantileErrorBound(vlo, vhi) {
				t.Fatalf("QuantileErrorBound(%v, %v) = %v, below α·max %v", vlo, vhi, QuantileErrorBound(vlo, vhi), bound)
			}
			if sign != 0 && math.Abs(got-c) > QuantileAlpha*math.Abs(c)*(1+1e-9) {
				t.Fatalf("n=%d q=%v values of one sign %v: sketch %v, quantile_cont %v: beyond α relative", n, q, xs, got, c)
			}
			checked++
		}
	}
	t.Logf("%d quantiles within the bound of quantile_cont", checked)
	if !math.IsNaN((QuantileSketch{}).Quantile(0.5)) {
		t.Fatal("empty sketch should have no quantile")
	}
}

// TestQuantileSketchSmallGroup: the three values 1.25, 10.5 and 20 have
// quantile_cont 19.05 at q = 0.95 (between ranks 1 and 2); the sketch says
// the same within 1% of 20, not the 10.5 of rank 1.
func TestQuantileSketchSmallGroup(t *testing.T) {
	s := QuantileSketch{}
	for _, x := range []float64{20, 1.25, 10.5} {
		s.Add(x)
	}
	for _, c := range []struct{ q, want float64 }{{0, 1.25}, {0.25, 5.875}, {0.5, 10.5}, {0.95, 19.05}, {1, 20}} {
		if got := s.Quantile(c.q); math.Abs(got-c.want) > 0.2 {
			t.Errorf("q=%v: %v, quantile_cont %v", c.q, got, c.want)
		}
	}
}
