package logic

import (
	"hash/fnv"
	"math"
	"strconv"
)

// MaxPartitions bounds streams.S.partitions.
const MaxPartitions = 1024

// PartitionOf returns the partition (0 ≤ p < s.Partitions) an event's log
// record goes to, from its partition key: the value of the stream's
// partition_by field (a null value is a key too), else the event's id (the
// id field's, or the one derived from its content). An event with neither
// returns -1: the writer spreads such events round robin. A repeated event
// has the same key as its first copy, so it meets it in the same
// partition's id window. The key is hashed with FNV-1a (64 bits), so the
// choice is the same in every process and version.
func (s *Stream) PartitionOf(ev *Event) int {
	if s.Partitions <= 1 {
		return 0
	}
	switch {
	case s.PartitionField >= 0 && s.PartitionField < len(ev.Values):
		return s.PartitionOfValue(ev.Values[s.PartitionField])
	case ev.ID != "":
		h := fnv.New64a()
		_, _ = h.Write([]byte(ev.ID))
		return int(h.Sum64() % uint64(s.Partitions))
	}
	return -1
}

// PartitionOfValue returns the partition an event whose partition key
// (the partition_by field's value) is v goes to; entities also use it to
// place a key's batch state (Entity.HomePartition).
func (s *Stream) PartitionOfValue(v Value) int {
	if s.Partitions <= 1 {
		return 0
	}
	h := fnv.New64a()
	var b [24]byte
	key := append(b[:0], byte(v.Kind))
	switch v.Kind {
	case TypeNull:
	case TypeFloat:
		key = strconv.AppendUint(key, math.Float64bits(v.F), 16)
	case TypeString:
		_, _ = h.Write(key)
		_, _ = h.Write([]byte(v.S))
		return int(h.Sum64() % uint64(s.Partitions))
	default:
		key = strconv.AppendInt(key, v.I, 10)
	}
	_, _ = h.Write(key)
	return int(h.Sum64() % uint64(s.Partitions))
}
