package eventlog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/s2"
)

// A log record (one JetStream message of a clean stream) packs the events
// of one write: everything one ingest request, or several concurrent ones,
// stored at once. Its layout:
//
//	0xB1                      format: events as they are
//	uvarint n                 events
//	n × (uvarint len, id,     the event id ("" when it has none)
//	     uvarint len, data)   the event's canonical record
//
// or, when that is smaller (JSON events compress about 3× and more):
//
//	0xB2                      format: events S2-compressed
//	uvarint n                 events
//	S2 block                  the n events as above
//
// Compression costs little CPU (S2 runs at GB/s) and saves it elsewhere:
// JetStream stores, caches, copies and delivers fewer bytes, and the
// block caches of the embedded server hold a fraction of the memory.
//
// An event's place in the log is (record sequence, index in the record).
const (
	packedV1 = 0xB1
	packedS2 = 0xB2
)

// errPacked says a record is not a valid packed record.
var errPacked = errors.New("eventlog: malformed log record")

// packedSize is the encoded size of one event in a record.
func packedSize(r Record) int {
	return uvarintLen(len(r.ID)) + len(r.ID) + uvarintLen(len(r.Data)) + len(r.Data)
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// appendPacked encodes recs as one log record.
func appendPacked(b []byte, recs []Record) []byte {
	b = append(b, packedV1)
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = binary.AppendUvarint(b, uint64(len(r.ID)))
		b = append(b, r.ID...)
		b = binary.AppendUvarint(b, uint64(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b
}

// compressPacked returns a packed record in its smaller form: as it is,
// or S2-compressed into dst (reused when it has room).
func compressPacked(dst, plain []byte) []byte {
	if len(plain) < 256 || plain[0] != packedV1 {
		return plain
	}
	_, k := binary.Uvarint(plain[1:])
	head := 1 + k
	need := head + s2.MaxEncodedLen(len(plain)-head)
	if cap(dst) < need {
		dst = make([]byte, need)
	}
	dst = dst[:need]
	dst[0] = packedS2
	copy(dst[1:head], plain[1:head])
	c := s2.Encode(dst[head:], plain[head:])
	if head+len(c) >= len(plain)*9/10 {
		return plain // incompressible: not worth a decode per read
	}
	return dst[:head+len(c)]
}

// Unpack calls fn for every event of a log record, in order, with its
// index, id and canonical record (both alias data, or a buffer of their
// own when the record is compressed). It stops at the first error fn
// returns, and reports a malformed record.
func Unpack(data []byte, fn func(i int, id, rec []byte) error) error {
	if len(data) == 0 || (data[0] != packedV1 && data[0] != packedS2) {
		return fmt.Errorf("%w: unknown format", errPacked)
	}
	p := data[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) && data[0] == packedV1 {
		return fmt.Errorf("%w: bad event count", errPacked)
	}
	p = p[k:]
	if data[0] == packedS2 {
		size, err := s2.DecodedLen(p)
		if err != nil || size > maxUnpacked {
			return fmt.Errorf("%w: bad compressed events", errPacked)
		}
		if p, err = s2.Decode(make([]byte, size), p); err != nil {
			return fmt.Errorf("%w: %v", errPacked, err)
		}
		if n > uint64(len(p)) {
			return fmt.Errorf("%w: bad event count", errPacked)
		}
	}
	next := func() ([]byte, bool) {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return nil, false
		}
		b := p[k : k+int(l) : k+int(l)]
		p = p[k+int(l):]
		return b, true
	}
	for i := 0; i < int(n); i++ {
		id, ok := next()
		if !ok {
			return fmt.Errorf("%w: event %d: bad id", errPacked, i)
		}
		rec, ok := next()
		if !ok {
			return fmt.Errorf("%w: event %d: bad data", errPacked, i)
		}
		if err := fn(i, id, rec); err != nil {
			return err
		}
	}
	if len(p) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errPacked, len(p))
	}
	return nil
}

// maxUnpacked bounds the events of one compressed record, uncompressed
// (the writer keeps them within one message of at most 64 MiB).
const maxUnpacked = 64 << 20

// Count is the number of events in a log record (0 when it is malformed).
func Count(data []byte) int {
	if len(data) < 2 || (data[0] != packedV1 && data[0] != packedS2) {
		return 0
	}
	n, k := binary.Uvarint(data[1:])
	if k <= 0 || n > maxUnpacked {
		return 0
	}
	return int(n)
}
