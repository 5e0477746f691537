package objcache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/storage/fsatomic"
	"github.com/braid-data/braid/storage/objcache"
	"github.com/braid-data/braid/storage/objstore"
)

// memStore is an in-memory objstore.Store that counts downloads per key;
// with gate set, every Download waits for it to be closed (after
// signalling started).
type memStore struct {
	mu        sync.Mutex
	objs      map[string][]byte
	downloads map[string]int
	gate      chan struct{}
	started   chan string
}

func newMem() *memStore {
	return &memStore{objs: map[string][]byte{}, downloads: map[string]int{}}
}

func (m *memStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.objs[key] = b
	m.mu.Unlock()
	return nil
}

func (m *memStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[key]; ok {
		return objstore.ErrExists
	}
	m.objs[key] = data
	return nil
}

func (m *memStore) Get(ctx context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return nil, fmt.Errorf("%w: %s", objstore.ErrNotFound, key)
	}
	return b, nil
}

func (m *memStore) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	b, err := m.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memStore) Download(ctx context.Context, key, path string) error {
	m.mu.Lock()
	m.downloads[key]++
	gate, started := m.gate, m.started
	m.mu.Unlock()
	if gate != nil {
		started <- key
		<-gate
	}
	b, err := m.Get(ctx, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func (m *memStore) List(ctx context.Context, prefix string) ([]objstore.Object, error) {
	return nil, errors.New("not used")
}

func (m *memStore) Stat(ctx context.Context, key string) (objstore.Object, error) {
	b, err := m.Get(ctx, key)
	return objstore.Object{Key: key, Size: int64(len(b))}, err
}

func (m *memStore) Delete(ctx context.Context, key string) error {
	m.mu.Lock()
	delete(m.objs, key)
	m.mu.Unlock()
	return nil
}

func (m *memStore) count(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.downloads[key]
}

// fill stores objects of 100 bytes under the keys (each its own bytes).
func fill(m *memStore, keys ...string) {
	for _, k := range keys {
		m.objs[k] = bytes.Repeat([]byte(k[len(k)-1:]), 100)
	}
}

func acquire(t *testing.T, c *objcache.Cache, keys ...string) ([]string, func()) {
	t.Helper()
	paths, release, err := c.Acquire(context.Background(), keys...)
	if err != nil {
		t.Fatal(err)
	}
	return paths, release
}

// present reports which of the paths exist.
func present(paths ...string) string {
	out := ""
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			out += "1"
		} else {
			out += "0"
		}
	}
	return out
}

// The bound holds with least recently used copies out first; a copy is the
// object's bytes; a copy removed is downloaded again when asked for.
func TestBoundAndLRU(t *testing.T) {
	m := newMem()
	fill(m, "s/a", "s/b", "s/c", "s/d")
	c, err := objcache.New(m, t.TempDir(), 350, nil)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, k := range []string{"s/a", "s/b", "s/c"} {
		p, rel := acquire(t, c, k)
		if b, err := os.ReadFile(p[0]); err != nil || !bytes.Equal(b, m.objs[k]) {
			t.Fatalf("copy of %s: %q %v", k, b, err)
		}
		rel()
		rel() // more than once: no effect
		paths = append(paths, p[0])
	}
	if c.Bytes() != 300 {
		t.Fatalf("bytes %d, want 300", c.Bytes())
	}
	_, rel := acquire(t, c, "s/a") // a is now the most recently used
	rel()
	pd, rel := acquire(t, c, "s/d")
	rel()
	paths = append(paths, pd[0])
	if got := present(paths...); got != "1011" || c.Bytes() != 300 {
		t.Fatalf("after d: present %s (a b c d), %d bytes; want b out, 300", got, c.Bytes())
	}
	if m.count("s/a") != 1 {
		t.Fatalf("a downloaded %d times, want 1 (cached)", m.count("s/a"))
	}
	p, rel := acquire(t, c, "s/b")
	rel()
	if m.count("s/b") != 2 || present(p[0]) != "1" {
		t.Fatalf("b downloaded %d times, want 2", m.count("s/b"))
	}
	if got := present(paths...); got != "1101" {
		t.Fatalf("after b again: present %s, want c out", got)
	}
}

// Pinned copies are never removed, even beyond the bound; once released
// the bound is restored.
func TestPinnedStay(t *testing.T) {
	m := newMem()
	fill(m, "a", "b", "c")
	c, err := objcache.New(m, t.TempDir(), 150, nil)
	if err != nil {
		t.Fatal(err)
	}
	pa, relA := acquire(t, c, "a")
	pbc, relBC := acquire(t, c, "b", "c")
	if got := present(pa[0], pbc[0], pbc[1]); got != "111" || c.Bytes() != 300 {
		t.Fatalf("pinned: present %s, %d bytes", got, c.Bytes())
	}
	// Pinned twice: a release of one holder keeps it.
	pa2, relA2 := acquire(t, c, "a")
	relA()
	if present(pa2[0]) != "1" {
		t.Fatal("a removed while still pinned")
	}
	relA2() // a is unpinned: out (300 > 150)
	if got := present(pa[0], pbc[0], pbc[1]); got != "011" || c.Bytes() != 200 {
		t.Fatalf("after releasing a: present %s, %d bytes", got, c.Bytes())
	}
	relBC() // b then c unpinned; b is the older: out
	if got := present(pa[0], pbc[0], pbc[1]); got != "001" || c.Bytes() != 100 {
		t.Fatalf("after releasing b, c: present %s, %d bytes", got, c.Bytes())
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// Callers that ask for one key while it downloads wait for that download:
// one download however many callers.
func TestOneDownloadPerKey(t *testing.T) {
	m := newMem()
	fill(m, "k/x")
	m.gate, m.started = make(chan struct{}), make(chan string, 1)
	reg := prometheus.NewRegistry()
	c, err := objcache.New(m, t.TempDir(), 1000, reg)
	if err != nil {
		t.Fatal(err)
	}
	const callers = 8
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	call := func() {
		defer wg.Done()
		paths, release, err := c.Acquire(context.Background(), "k/x")
		if err == nil {
			var b []byte
			if b, err = os.ReadFile(paths[0]); err == nil && len(b) != 100 {
				err = fmt.Errorf("copy of %d bytes", len(b))
			}
			release()
		}
		errs <- err
	}
	wg.Add(1)
	go call()
	<-m.started // the download runs (and waits for the gate)
	for i := 1; i < callers; i++ {
		wg.Add(1)
		go call()
	}
	// Every other caller found the download under way (a hit) before it ends.
	for counter(t, reg, "braid_objcache_hits_total") < callers-1 {
		runtime.Gosched()
	}
	close(m.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := m.count("k/x"); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
	if d := counter(t, reg, "braid_objcache_downloads_total"); d != 1 {
		t.Fatalf("downloads metric %v", d)
	}
}

// A missing object is ErrNotFound and pins nothing; a later Acquire tries
// again.
func TestMissing(t *testing.T) {
	m := newMem()
	fill(m, "a")
	c, err := objcache.New(m, t.TempDir(), 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Acquire(context.Background(), "a", "nope"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	fill(m, "nope")
	p, rel := acquire(t, c, "nope")
	rel()
	if present(p[0]) != "1" || m.count("nope") != 2 {
		t.Fatalf("retry: %d downloads", m.count("nope"))
	}
	if _, _, err := c.Acquire(context.Background(), "../x"); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("bad key: %v", err)
	}
}

// Copies left by an earlier process are used again; its temp files go.
func TestAdopt(t *testing.T) {
	m := newMem()
	fill(m, "d/a", "d/b")
	dir := t.TempDir()
	c, err := objcache.New(m, dir, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, rel := acquire(t, c, "d/a", "d/b")
	rel()
	tmp := filepath.Join(dir, "d", fsatomic.TempPrefix+"half")
	if err := os.WriteFile(tmp, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c2, err := objcache.New(m, dir, 150, nil) // a smaller bound: one goes
	if err != nil {
		t.Fatal(err)
	}
	if present(tmp) != "0" || c2.Bytes() != 100 {
		t.Fatalf("temp file %s, %d bytes", present(tmp), c2.Bytes())
	}
	p, rel := acquire(t, c2, "d/a", "d/b")
	rel()
	if m.count("d/a")+m.count("d/b") != 3 || present(p...) != "01" && present(p...) != "10" {
		t.Fatalf("downloads a %d b %d, present %s", m.count("d/a"), m.count("d/b"), present(p...))
	}
}

// On the file store the objects are read in place: no copies.
func TestFileStoreInPlace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := objstore.NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "p/q.bin", bytes.NewReader([]byte("abc")), 3); err != nil {
		t.Fatal(err)
	}
	cdir := filepath.Join(t.TempDir(), "cache")
	c, err := objcache.New(st, cdir, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	paths, release, err := c.Acquire(ctx, "p/q.bin")
	if err != nil {
		t.Fatal(err)
	}
	release()
	if paths[0] != filepath.Join(dir, "p", "q.bin") {
		t.Fatalf("path %s, want the object's file", paths[0])
	}
	if _, err := os.Stat(cdir); !os.IsNotExist(err) {
		t.Fatalf("cache directory made for the file store: %v", err)
	}
	if _, _, err := c.Acquire(ctx, "p/none"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}
