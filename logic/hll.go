package logic

import (
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"slices"
)

// HyperLogLog, bit-compatible with Redis's PFADD/PFCOUNT: the same hash
// (MurmurHash64A, seed 0xadc83b19), 2^14 registers of 6 bits, the same
// register update and the same estimator (Ertl's improved estimator, as in
// Redis ≥ 5). So a sketch built here (by the batch layer) and one built by
// Redis's PFADD (by the speed layer) merge register by register, and the
// merged estimate is what PFCOUNT of the union would say.
//
// Error bound: the standard error of the estimate is 1.04/√m = 0.81% with
// m = 16384 registers (about 95% of estimates are within ±1.63%).
const (
	HLLP         = 14
	HLLRegisters = 1 << HLLP
	HLLStdError  = 1.04 / 128 // 1.04/√16384
	hllQ         = 64 - HLLP
	hllSeed      = 0xadc83b19
)

// DistinctTolerance is the absolute tolerance the parity tests and `braid
// audit` allow a count_distinct estimate of n distinct values: three
// standard errors (2.43%, so about 997 in 1000 estimates fall inside) plus
// two for the register collisions that can hide a value or two among a few
// dozen (two of 30 values share a register about once in 2,500 sketches).
func DistinctTolerance(n int64) float64 { return 3*HLLStdError*float64(n) + 2 }

// HLL is a HyperLogLog. It keeps the registers that are set in a sorted
// list while there are few (a sketch of a handful of values costs bytes,
// not 16 KiB) and switches to one byte per register beyond hllSparseMax.
// The zero value is an empty sketch. Not safe for concurrent mutation.
type HLL struct {
	sparse []uint32 // register<<8 | value, sorted by register; while dense == nil
	dense  *[HLLRegisters]uint8
}

// hllSparseMax is the number of set registers kept as a list.
const hllSparseMax = 1024

// murmur64A is MurmurHash64A, as Redis's hyperloglog.c uses it.
func murmur64A(key []byte, seed uint64) uint64 {
	const m = 0xc6a4a7935bd1e995
	const r = 47
	h := seed ^ (uint64(len(key)) * m)
	for len(key) >= 8 {
		k := binary.LittleEndian.Uint64(key)
		k *= m
		k ^= k >> r
		k *= m
		h ^= k
		h *= m
		key = key[8:]
	}
	switch len(key) {
	case 7:
		h ^= uint64(key[6]) << 48
		fallthrough
	case 6:
		h ^= uint64(key[5]) << 40
		fallthrough
	case 5:
		h ^= uint64(key[4]) << 32
		fallthrough
	case 4:
		h ^= uint64(key[3]) << 24
		fallthrough
	case 3:
		h ^= uint64(key[2]) << 16
		fallthrough
	case 2:
		h ^= uint64(key[1]) << 8
		fallthrough
	case 1:
		h ^= uint64(key[0])
		h *= m
	}
	h ^= h >> r
	h *= m
	h ^= h >> r
	return h
}

// HLLPosition returns the register and its candidate value for an element,
// exactly as Redis's hllPatLen does.
func HLLPosition(elem []byte) (index int, rho uint8) {
	h := murmur64A(elem, hllSeed)
	index = int(h & (HLLRegisters - 1))
	h >>= HLLP
	h |= 1 << hllQ // guarantees termination
	return index, uint8(bits.TrailingZeros64(h) + 1)
}

// Add adds an element.
func (s *HLL) Add(elem []byte) {
	i, r := HLLPosition(elem)
	s.set(i, r)
}

// set raises register i to r.
func (s *HLL) set(i int, r uint8) {
	if s.dense != nil {
		if r > s.dense[i] {
			s.dense[i] = r
		}
		return
	}
	j, found := s.find(i)
	if found {
		if uint8(s.sparse[j]) < r {
			s.sparse[j] = uint32(i)<<8 | uint32(r)
		}
		return
	}
	s.sparse = slices.Insert(s.sparse, j, uint32(i)<<8|uint32(r))
	if len(s.sparse) > hllSparseMax {
		s.densify()
	}
}

// find locates register i in the sparse list (its index, or where it goes).
func (s *HLL) find(i int) (int, bool) {
	return slices.BinarySearchFunc(s.sparse, uint32(i), func(e, t uint32) int { return cmp.Compare(e>>8, t) })
}

func (s *HLL) densify() {
	d := new([HLLRegisters]uint8)
	for _, e := range s.sparse {
		d[e>>8] = uint8(e)
	}
	s.dense, s.sparse = d, nil
}

// Merge sets every register to the larger of the two.
func (s *HLL) Merge(o *HLL) {
	if o.dense != nil && s.dense == nil {
		s.densify()
	}
	if o.dense != nil {
		for i, r := range o.dense {
			if r > s.dense[i] {
				s.dense[i] = r
			}
		}
		return
	}
	for _, e := range o.sparse {
		s.set(int(e>>8), uint8(e))
	}
}

// Clone returns an independent copy.
func (s *HLL) Clone() *HLL {
	c := &HLL{sparse: slices.Clone(s.sparse)}
	if s.dense != nil {
		d := *s.dense
		c.dense = &d
	}
	return c
}

// Register returns the value of register i.
func (s *HLL) Register(i int) uint8 {
	if s.dense != nil {
		return s.dense[i]
	}
	j, found := s.find(i)
	if !found {
		return 0
	}
	return uint8(s.sparse[j])
}

// Equal reports whether two sketches have the same registers.
func (s *HLL) Equal(o *HLL) bool {
	for i := 0; i < HLLRegisters; i++ {
		if s.Register(i) != o.Register(i) {
			return false
		}
	}
	return true
}

// Count estimates the number of distinct elements, as Redis's PFCOUNT.
func (s *HLL) Count() int64 {
	var histo [64]int
	if s.dense != nil {
		for _, r := range s.dense {
			histo[r]++
		}
	} else {
		histo[0] = HLLRegisters - len(s.sparse)
		for _, e := range s.sparse {
			histo[uint8(e)]++
		}
	}
	m := float64(HLLRegisters)
	z := m * hllTau((m-float64(histo[hllQ+1]))/m)
	for j := hllQ; j >= 1; j-- {
		z += float64(histo[j])
		z *= 0.5
	}
	z += m * hllSigma(float64(histo[0])/m)
	return int64(math.Round(0.5 / math.Ln2 * m * m / z))
}

func hllSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		zp := z
		z += x * y
		y += y
		if zp == z {
			return z
		}
	}
}

func hllTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		zp := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if zp == z {
			return z / 3
		}
	}
}

// ErrNotHLL is returned for a string that is not a Redis HyperLogLog.
var ErrNotHLL = errors.New("not a Redis HyperLogLog")

// DecodeRedisHLL reads the value of a Redis HyperLogLog key (GET of a key
// written by PFADD/PFMERGE), in its sparse or dense encoding.
func DecodeRedisHLL(b []byte) (*HLL, error) {
	const header = 16
	if len(b) < header || string(b[:4]) != "HYLL" {
		return nil, ErrNotHLL
	}
	s := new(HLL)
	set := func(i int, r uint8) {
		if r != 0 {
			s.set(i, r)
		}
	}
	switch b[4] {
	case 0: // dense: 6-bit registers, little-endian bit packing
		if len(b) != header+(HLLRegisters*6+7)/8 {
			return nil, ErrNotHLL
		}
		regs := b[header:]
		for i := 0; i < HLLRegisters; i++ {
			bit := i * 6
			byteIdx, fb := bit/8, uint(bit%8)
			b0 := uint(regs[byteIdx])
			var b1 uint
			if byteIdx+1 < len(regs) {
				b1 = uint(regs[byteIdx+1])
			}
			set(i, uint8(((b0>>fb)|(b1<<(8-fb)))&63))
		}
	case 1: // sparse: ZERO, XZERO and VAL opcodes
		idx := 0
		for p := header; p < len(b); {
			op := b[p]
			switch {
			case op&0xc0 == 0: // ZERO: 00xxxxxx, run of len+1 zero registers
				idx += int(op&0x3f) + 1
				p++
			case op&0xc0 == 0x40: // XZERO: 01xxxxxx yyyyyyyy
				if p+1 >= len(b) {
					return nil, ErrNotHLL
				}
				idx += (int(op&0x3f)<<8 | int(b[p+1])) + 1
				p += 2
			default: // VAL: 1vvvvvxx, value v+1 over xx+1 registers
				val := uint8((op>>2)&0x1f) + 1
				n := int(op&0x3) + 1
				for k := 0; k < n && idx < HLLRegisters; k++ {
					set(idx, val)
					idx++
				}
				p++
			}
		}
		if idx != HLLRegisters {
			return nil, ErrNotHLL
		}
	default:
		return nil, ErrNotHLL
	}
	return s, nil
}

// MarshalRedis encodes the sketch as the value of a Redis HyperLogLog key
// (what GET returns for a key written by PFADD): the sparse encoding while
// it is small and every register fits it, else the dense one. The cached
// cardinality is marked invalid, so a Redis that is handed the value (SET)
// computes PFCOUNT afresh. DecodeRedisHLL reads it back.
func (s *HLL) MarshalRedis() []byte {
	hdr := []byte{'H', 'Y', 'L', 'L', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}
	if s.dense == nil {
		if b, ok := s.appendSparse(hdr); ok {
			return b
		}
	}
	hdr[4] = 0
	regs := make([]byte, (HLLRegisters*6+7)/8)
	for i := 0; i < HLLRegisters; i++ {
		r := uint(s.Register(i))
		bit := i * 6
		byteIdx, fb := bit/8, uint(bit%8)
		regs[byteIdx] |= byte(r << fb)
		if fb > 2 {
			regs[byteIdx+1] |= byte(r >> (8 - fb))
		}
	}
	return append(hdr, regs...)
}

// hllSparseValMax is the largest register value the sparse encoding holds.
const hllSparseValMax = 32

func (s *HLL) appendSparse(b []byte) ([]byte, bool) {
	b[4] = 1
	zeros := func(n int) {
		for n > 0 {
			if n > 64 {
				k := min(n, 16384)
				b = append(b, 0x40|byte((k-1)>>8), byte(k-1))
				n -= k
				continue
			}
			b = append(b, byte(n-1))
			n = 0
		}
	}
	next := 0 // first register not yet encoded
	for j := 0; j < len(s.sparse); {
		i, v := int(s.sparse[j]>>8), uint8(s.sparse[j])
		if v > hllSparseValMax {
			return nil, false
		}
		zeros(i - next)
		run := 1
		for run < 4 && j+run < len(s.sparse) && int(s.sparse[j+run]>>8) == i+run && uint8(s.sparse[j+run]) == v {
			run++
		}
		b = append(b, 0x80|(v-1)<<2|byte(run-1))
		next = i + run
		j += run
	}
	zeros(HLLRegisters - next)
	return b, true
}
