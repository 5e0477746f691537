package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/braid-data/braid/storage/objstore"
)

// RunObjectStore checks an objstore.Store against the contract in its
// comment. open makes a fresh, empty store (its own directory, bucket or
// prefix) and returns a function opening a handle on it; the suite opens a
// second handle to check that another process sees the same objects.
func RunObjectStore(t *testing.T, open func(t *testing.T) func() objstore.Store) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 16))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}

	t.Run("RoundTrip", func(t *testing.T) {
		st := open(t)()
		// Sizes: empty, small, beyond 5 MiB (S3's smallest part), and beyond
		// 16 MiB, where the S3 client switches to multipart uploads of 16 MiB
		// parts (with a known size and an unknown one).
		for _, tc := range []struct {
			size    int
			unknown bool
		}{{0, false}, {1, false}, {1000, false}, {5<<20 + 12345, false}, {16<<20 + 5, false}, {17<<20 + 3, true}} {
			key := fmt.Sprintf("round/%d-%v.bin", tc.size, tc.unknown)
			want := random(tc.size)
			size := int64(len(want))
			if tc.unknown {
				size = -1
			}
			if err := st.Put(ctx, key, bytes.NewReader(want), size); err != nil {
				t.Fatalf("Put %s: %v", key, err)
			}
			got, err := st.Get(ctx, key)
			if err != nil {
				t.Fatalf("Get %s: %v", key, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Get %s: %d bytes, differ from the %d put", key, len(got), len(want))
			}
			o, err := st.Stat(ctx, key)
			if err != nil || o.Key != key || o.Size != int64(len(want)) {
				t.Fatalf("Stat %s = %+v, %v; want size %d", key, o, err, len(want))
			}
			r, err := st.Open(ctx, key)
			if err != nil {
				t.Fatalf("Open %s: %v", key, err)
			}
			var buf bytes.Buffer
			_, err = buf.ReadFrom(r)
			r.Close()
			if err != nil || !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("Open %s: read %d bytes (%v), differ from the %d put", key, buf.Len(), err, len(want))
			}
			path := filepath.Join(t.TempDir(), "sub", "copy")
			if err := st.Download(ctx, key, path); err != nil {
				t.Fatalf("Download %s: %v", key, err)
			}
			if local, err := os.ReadFile(path); err != nil || !bytes.Equal(local, got) {
				t.Fatalf("Download %s: local copy of %d bytes (%v) differs from Get's %d", key, len(local), err, len(got))
			}
		}
	})

	t.Run("SecondHandle", func(t *testing.T) {
		opener := open(t)
		a, b := opener(), opener()
		want := random(4096)
		if err := a.Put(ctx, "x/shared", bytes.NewReader(want), int64(len(want))); err != nil {
			t.Fatal(err)
		}
		got, err := b.Get(ctx, "x/shared")
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("second handle Get: %d bytes, %v; want the %d put by the first", len(got), err, len(want))
		}
	})

	t.Run("Replace", func(t *testing.T) {
		st := open(t)()
		first, second := random(300), random(200)
		for _, b := range [][]byte{first, second} {
			if err := st.Put(ctx, "r/k", bytes.NewReader(b), int64(len(b))); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := st.Get(ctx, "r/k"); err != nil || !bytes.Equal(got, second) {
			t.Fatalf("after two Puts Get = %d bytes, %v; want the second's %d", len(got), err, len(second))
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		st := open(t)()
		if _, err := st.Get(ctx, "no/such"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
		}
		if _, err := st.Open(ctx, "no/such"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Open of a missing key: %v, want ErrNotFound", err)
		}
		if _, err := st.Stat(ctx, "no/such"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Stat of a missing key: %v, want ErrNotFound", err)
		}
		path := filepath.Join(t.TempDir(), "copy")
		if err := st.Download(ctx, "no/such", path); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Download of a missing key: %v, want ErrNotFound", err)
		}
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("Download of a missing key left a file at %s", path)
		}
		if err := st.Delete(ctx, "no/such"); err != nil {
			t.Fatalf("Delete of a missing key: %v, want nil", err)
		}
		if l, err := st.List(ctx, ""); err != nil || len(l) != 0 {
			t.Fatalf("List of an empty store = %v, %v", l, err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		st := open(t)()
		keep := random(10)
		for _, k := range []string{"d/a", "d/b"} {
			if err := st.Put(ctx, k, bytes.NewReader(keep), int64(len(keep))); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Delete(ctx, "d/a"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := st.Get(ctx, "d/a"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
		}
		if _, err := st.Stat(ctx, "d/a"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Stat after Delete: %v, want ErrNotFound", err)
		}
		if got, err := st.Get(ctx, "d/b"); err != nil || !bytes.Equal(got, keep) {
			t.Fatalf("Delete of d/a touched d/b: %v", err)
		}
		if l, err := st.List(ctx, "d/"); err != nil || len(l) != 1 || l[0].Key != "d/b" {
			t.Fatalf("List after Delete = %v, %v; want [d/b]", l, err)
		}
		// A deleted key can be created again, also with PutIfAbsent.
		if err := st.PutIfAbsent(ctx, "d/a", keep); err != nil {
			t.Fatalf("PutIfAbsent after Delete: %v", err)
		}
	})

	t.Run("List", func(t *testing.T) {
		st := open(t)()
		// Keys sharing prefixes in every way: a segment boundary or not,
		// and keys with unusual characters; sizes tell them apart.
		keys := []string{
			"lake/orders/2026-01-01/000001.parquet",
			"lake/orders/2026-01-01/000002.parquet",
			"lake/orders/2026-01-02/000003.parquet",
			"lake/orders-old/a",
			"lake/ordersb",
			"lake/orders/manifest-00000001.json",
			"views/v 1/shard=3/part+1.bin",
			"views/v 1/ümlaut-ключ.bin",
			"views/%41 #?&=;,!'()~@$*.bin",
			"top",
		}
		sizes := map[string]int64{}
		for i, k := range keys {
			b := random(i + 1)
			sizes[k] = int64(len(b))
			if err := st.Put(ctx, k, bytes.NewReader(b), int64(len(b))); err != nil {
				t.Fatalf("Put %q: %v", k, err)
			}
			if got, err := st.Get(ctx, k); err != nil || !bytes.Equal(got, b) {
				t.Fatalf("Get %q: %v (%d bytes, want %d)", k, err, len(got), len(b))
			}
		}
		for _, prefix := range []string{"", "lake/", "lake/orders", "lake/orders/", "lake/orders/2026-01-01/", "lake/orders/2026-01-01/000002", "lake/orders-", "views/", "views/v 1/", "views/%", "t", "top", "topp", "nothing/", "lake/orders/2026-01-01/000001.parquet/"} {
			var want []objstore.Object
			for _, k := range keys {
				if strings.HasPrefix(k, prefix) {
					want = append(want, objstore.Object{Key: k, Size: sizes[k]})
				}
			}
			slices.SortFunc(want, func(a, b objstore.Object) int { return strings.Compare(a.Key, b.Key) })
			got, err := st.List(ctx, prefix)
			if err != nil {
				t.Fatalf("List %q: %v", prefix, err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("List %q =\n  %v\nwant\n  %v", prefix, got, want)
			}
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		st := open(t)()
		for _, k := range []string{"", "/a", "a/", "a//b", "a/./b", "a/../b", "..", "a\\b", "a\x00b", "a\nb", ".tmp-x", "a/.tmp-x", "\xff"} {
			if err := st.Put(ctx, k, bytes.NewReader(nil), 0); !errors.Is(err, objstore.ErrInvalidKey) {
				t.Errorf("Put %q: %v, want ErrInvalidKey", k, err)
			}
			if err := st.PutIfAbsent(ctx, k, nil); !errors.Is(err, objstore.ErrInvalidKey) {
				t.Errorf("PutIfAbsent %q: %v, want ErrInvalidKey", k, err)
			}
			if _, err := st.Get(ctx, k); !errors.Is(err, objstore.ErrInvalidKey) {
				t.Errorf("Get %q: %v, want ErrInvalidKey", k, err)
			}
		}
		if l, err := st.List(ctx, ""); err != nil || len(l) != 0 {
			t.Fatalf("invalid keys stored objects: %v, %v", l, err)
		}
	})

	t.Run("PutIfAbsent", func(t *testing.T) {
		opener := open(t)
		st := opener()
		first := random(100)
		if err := st.PutIfAbsent(ctx, "m/manifest", first); err != nil {
			t.Fatalf("PutIfAbsent on a free key: %v", err)
		}
		if err := st.PutIfAbsent(ctx, "m/manifest", random(50)); !errors.Is(err, objstore.ErrExists) {
			t.Fatalf("PutIfAbsent on a taken key: %v, want ErrExists", err)
		}
		if got, err := st.Get(ctx, "m/manifest"); err != nil || !bytes.Equal(got, first) {
			t.Fatalf("a refused PutIfAbsent changed the object: %v", err)
		}
		// An object written with Put takes the key too.
		if err := st.Put(ctx, "m/put", bytes.NewReader(first), int64(len(first))); err != nil {
			t.Fatal(err)
		}
		if err := st.PutIfAbsent(ctx, "m/put", random(5)); !errors.Is(err, objstore.ErrExists) {
			t.Fatalf("PutIfAbsent on a key written by Put: %v, want ErrExists", err)
		}

		// N writers race on each of several keys, each through its own
		// handle: exactly one wins per key and the object holds its bytes.
		const writers, rounds = 8, 5
		handles := make([]objstore.Store, writers)
		for i := range handles {
			handles[i] = opener()
		}
		for round := range rounds {
			key := fmt.Sprintf("race/%d/manifest-%08d.json", round, round)
			bodies := make([][]byte, writers)
			for i := range bodies {
				bodies[i] = random(64 + i*4096) // distinct sizes and bytes
			}
			errs := make([]error, writers)
			var start, wg sync.WaitGroup
			start.Add(1)
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					start.Wait()
					errs[i] = handles[i].PutIfAbsent(ctx, key, bodies[i])
				}()
			}
			start.Done()
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil:
					if winner >= 0 {
						t.Fatalf("%s: writers %d and %d both won", key, winner, i)
					}
					winner = i
				case !errors.Is(err, objstore.ErrExists):
					t.Fatalf("%s: writer %d: %v, want nil or ErrExists", key, i, err)
				}
			}
			if winner < 0 {
				t.Fatalf("%s: no writer won", key)
			}
			got, err := st.Get(ctx, key)
			if err != nil || !bytes.Equal(got, bodies[winner]) {
				t.Fatalf("%s: object (%d bytes, %v) is not the winner's (%d bytes)", key, len(got), err, len(bodies[winner]))
			}
		}
		if l, err := st.List(ctx, "race/"); err != nil || len(l) != rounds {
			t.Fatalf("List race/ = %v, %v; want %d objects (no temp files)", l, err, rounds)
		}
	})
}
