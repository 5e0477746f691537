package logic

import (
	"math"
	"sort"
	"strconv"
)

// Quantile sketch: log-spaced buckets (DDSketch-style). A value x > 0 falls
// in bucket k = ceil(ln x / ln γ) with γ = (1+α)/(1-α); every value in the
// bucket is within relative error α of its representative 2γ^k/(γ+1).
// Buckets only ever add, so sketches merge exactly and in any order, and
// the bucket function is rendered for DuckDB too (QuantileBucketSQL), so the
// batch layer builds the very same buckets.
//
// Error bound: the sketch estimates quantile_cont, the value DuckDB's
// quantile_cont(f, q) answers in the batch layer: with r = q·(n−1), lo =
// floor(r) and hi = ceil(r) (0-based ranks over the sorted values), it
// interpolates lo_val + (r − lo)·(hi_val − lo_val) between the values of
// ranks lo and hi. The sketch interpolates the same way between the
// representatives of the buckets holding those ranks, and each
// representative is within relative error α = 1% of the value of its rank,
// so the estimate is within α·max(|v_lo|, |v_hi|) of quantile_cont (v_lo,
// v_hi the values of ranks lo and hi; QuantileErrorBound). For values of
// one sign that is within α (relative) of quantile_cont itself. Values with
// |x| < 1e-9 count as zero, which adds at most 1e-9 (absolute).
const (
	QuantileAlpha = 0.01
	quantileMin   = 1e-9    // |x| below this counts as zero
	quantileBias  = 1 << 20 // keeps positive and negative keys apart
)

var (
	quantileGamma   = (1 + QuantileAlpha) / (1 - QuantileAlpha)
	quantileLnGamma = math.Log(quantileGamma)
)

// QuantileBucket returns the bucket key of a value: 0 for zero, positive
// keys for positive values, negative keys for negative ones; keys order like
// the values they hold.
func QuantileBucket(x float64) int32 {
	a := math.Abs(x)
	if a < quantileMin {
		return 0
	}
	k := int32(math.Ceil(math.Log(a)/quantileLnGamma)) + quantileBias
	if x < 0 {
		return -k
	}
	return k
}

// QuantileValue is the representative value of a bucket key.
func QuantileValue(key int32) float64 {
	if key == 0 {
		return 0
	}
	k := key
	if k < 0 {
		k = -k
	}
	// γ^k times 2/(γ+1) < 1: no intermediate result overflows for values
	// up to about math.MaxFloat64/γ.
	v := math.Pow(quantileGamma, float64(k-quantileBias)) * (2 / (quantileGamma + 1))
	if key < 0 {
		return -v
	}
	return v
}

// QuantileBucketSQL renders QuantileBucket for DuckDB over a DOUBLE
// expression. The constant is passed as text so both sides divide by the
// very same double.
func QuantileBucketSQL(x string) string {
	ln := "CAST('" + strconv.FormatFloat(quantileLnGamma, 'g', -1, 64) + "' AS DOUBLE)"
	min := strconv.FormatFloat(quantileMin, 'g', -1, 64)
	bias := strconv.Itoa(quantileBias)
	return "CASE WHEN " + x + " IS NULL THEN NULL WHEN abs(" + x + ") < " + min + " THEN 0 " +
		"WHEN " + x + " > 0 THEN CAST(ceil(ln(" + x + ") / " + ln + ") AS INTEGER) + " + bias + " " +
		"ELSE -(CAST(ceil(ln(-(" + x + ")) / " + ln + ") AS INTEGER) + " + bias + ") END"
}

// QuantileSketch counts values per bucket key.
type QuantileSketch map[int32]float64

// Add counts one value.
func (s QuantileSketch) Add(x float64) { s[QuantileBucket(x)]++ }

// Merge adds another sketch's counts.
func (s QuantileSketch) Merge(o QuantileSketch) {
	for k, n := range o {
		s[k] += n
	}
}

// Quantile estimates quantile_cont (0 ≤ q ≤ 1) of the values counted:
// with r = q·(n−1), it interpolates between the representatives of the
// buckets holding ranks floor(r) and ceil(r), as quantile_cont does
// between the values of those ranks; NaN when empty.
func (s QuantileSketch) Quantile(q float64) float64 {
	var n float64
	keys := make([]int32, 0, len(s))
	for k, c := range s {
		if c > 0 {
			keys = append(keys, k)
			n += c
		}
	}
	if n == 0 {
		return math.NaN()
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	r := q * (n - 1)
	lo, hi := math.Floor(r), math.Ceil(r)
	last := QuantileValue(keys[len(keys)-1])
	vlo, vhi, found := last, last, false
	var cum float64
	for _, k := range keys {
		cum += s[k]
		if !found && cum > lo {
			vlo, found = QuantileValue(k), true
		}
		if cum > hi {
			vhi = QuantileValue(k)
			break
		}
	}
	return quantileCont(vlo, vhi, r-lo)
}

// quantileCont interpolates between the values of ranks floor(r) and
// ceil(r) at the fraction f = r − floor(r), as DuckDB's quantile_cont does.
func quantileCont(vlo, vhi, f float64) float64 {
	if vlo == vhi {
		return vlo
	}
	return vlo + f*(vhi-vlo)
}

// QuantileErrorBound is how far the sketch's estimate of a quantile may be
// from quantile_cont, given the values of the two ranks quantile_cont
// interpolates between: α·max(|vlo|, |vhi|), plus the 1e-9 below which
// values count as zero, with room for float rounding.
func QuantileErrorBound(vlo, vhi float64) float64 {
	return QuantileAlpha*math.Max(math.Abs(vlo), math.Abs(vhi))*(1+1e-9) + quantileMin
}
