package logic

import (
	"testing"
	"time"
)

func TestStreamMark(t *testing.T) {
	idle := 30 * time.Second
	cases := []struct {
		name  string
		parts []PartMark
		want  int64
	}{
		{"none", nil, 0},
		{"no data", []PartMark{{}, {}}, 0},
		{"min over partitions with data", []PartMark{{Max: 500, LastArrival: 1000}, {Max: 300, LastArrival: 1000}, {}}, 300},
		{"a quiet partition does not hold back", []PartMark{{Max: 900_000, LastArrival: 1_000_000}, {Max: 10, LastArrival: 1_000_000 - 31_000}}, 900_000},
		{"within idle it does", []PartMark{{Max: 900_000, LastArrival: 1_000_000}, {Max: 10, LastArrival: 1_000_000 - 29_000}}, 10},
		{"one partition", []PartMark{{Max: 7, LastArrival: 1}}, 7},
	}
	for _, c := range cases {
		if got := StreamMark(c.parts, idle); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	// Against a direct reading of the rule on random inputs.
	for i := range 1000 {
		n := 1 + i%5
		parts := make([]PartMark, n)
		for j := range parts {
			if (i+j)%4 != 0 {
				parts[j] = PartMark{Max: int64((i*7919+j*104729)%100000) + 1, LastArrival: int64((i*31 + j*57000) % 200000)}
			}
		}
		var latest int64
		for _, p := range parts {
			if p.Max > 0 && p.LastArrival > latest {
				latest = p.LastArrival
			}
		}
		want, all := int64(0), int64(0)
		for _, p := range parts {
			if p.Max == 0 {
				continue
			}
			if all == 0 || p.Max < all {
				all = p.Max
			}
			if latest-p.LastArrival <= idle.Milliseconds() && (want == 0 || p.Max < want) {
				want = p.Max
			}
		}
		if want == 0 {
			want = all
		}
		if got := StreamMark(parts, idle); got != want {
			t.Fatalf("%v: %d, want %d", parts, got, want)
		}
	}
}
