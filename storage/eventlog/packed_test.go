package eventlog

import (
	"bytes"
	"testing"
)

// FuzzPacked: any events round-trip through a log record, and Unpack of
// any bytes either fails or yields events that pack back to those bytes.
func FuzzPacked(f *testing.F) {
	f.Add([]byte("a"), []byte(`{"x":1}`), []byte(""), []byte(`{}`), []byte{0xB1, 1, 1, 'a', 2, '{', '}'})
	f.Add([]byte(""), []byte(""), []byte("id"), bytes.Repeat([]byte("z"), 300), []byte{0xB1, 0})
	f.Add([]byte("k"), bytes.Repeat([]byte(`{"a":1}`), 100), []byte("k2"), []byte(`{"b":2}`), []byte{0xB2, 1, 0})
	f.Fuzz(func(t *testing.T, id1, rec1, id2, rec2, raw []byte) {
		in := []Record{{ID: string(id1), Data: rec1}, {ID: string(id2), Data: rec2}}
		data := appendPacked(nil, in)
		if n := Count(data); n != 2 {
			t.Fatalf("Count = %d, want 2", n)
		}
		size := 0
		for _, r := range in {
			size += packedSize(r)
		}
		if len(data) > size+16 || data[0] != packedV1 {
			t.Fatalf("record of %d bytes for %d bytes of events", len(data), size)
		}
		// Compressed (when that is smaller) or not, the same events.
		if z := compressPacked(nil, data); !bytes.Equal(z, data) {
			if z[0] != packedS2 || len(z) >= len(data) || Count(z) != 2 {
				t.Fatalf("compressed record: format %x, %d bytes for %d, count %d", z[0], len(z), len(data), Count(z))
			}
			data = z
		}
		var out []Record
		if err := Unpack(data, func(i int, id, rec []byte) error {
			if i != len(out) {
				t.Fatalf("index %d, want %d", i, len(out))
			}
			out = append(out, Record{ID: string(id), Data: rec})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(out) != 2 || out[0].ID != in[0].ID || !bytes.Equal(out[0].Data, in[0].Data) || out[1].ID != in[1].ID || !bytes.Equal(out[1].Data, in[1].Data) {
			t.Fatalf("round trip: %v, want %v", out, in)
		}
		// Arbitrary bytes: an error, or events that Count agrees with and
		// that survive a round trip of their own.
		var got []Record
		if err := Unpack(raw, func(_ int, id, rec []byte) error {
			got = append(got, Record{ID: string(id), Data: bytes.Clone(rec)})
			return nil
		}); err != nil {
			return
		}
		if Count(raw) != len(got) {
			t.Fatalf("Count(%q) = %d, Unpack found %d", raw, Count(raw), len(got))
		}
		var again []Record
		if err := Unpack(appendPacked(nil, got), func(_ int, id, rec []byte) error {
			again = append(again, Record{ID: string(id), Data: rec})
			return nil
		}); err != nil || len(again) != len(got) {
			t.Fatalf("re-encoding %q: %v, %d events, want %d", raw, err, len(again), len(got))
		}
		for i := range got {
			if again[i].ID != got[i].ID || !bytes.Equal(again[i].Data, got[i].Data) {
				t.Fatalf("re-encoding %q: event %d changed", raw, i)
			}
		}
	})
}
