// Package objcache keeps local copies of objects of an objstore.Store, for
// readers that read local files only (DuckDB: its bundled library has no
// httpfs). Objects are immutable, so a copy is valid as long as it is kept;
// the cache is bounded in bytes, least recently used copies out first, and a
// copy in use (pinned between Acquire and its release) is never removed.
package objcache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/fsatomic"
	"github.com/braid-data/braid/storage/metrics"
	"github.com/braid-data/braid/storage/objstore"
)

// parallel is how many objects the cache downloads at once.
const parallel = 4

// Cache is a bounded local cache of a store's objects under a directory
// (a copy of key k is the file dir/k). Safe for concurrent use; the
// directory must be this cache's alone (one process).
type Cache struct {
	st    objstore.Store
	local objstore.Local // st's local files, when it has them: no copies
	dir   string
	max   int64

	mu      sync.Mutex
	sem     chan struct{} // downloads running
	entries map[string]*entry
	lru     *list.List // of *entry, ready and unpinned, least recently used first
	total   int64      // bytes of the copies present (ready or being counted)

	hits, misses, evictions prometheus.Counter
	bytes                   prometheus.Gauge
}

type entry struct {
	key   string
	path  string
	size  int64
	pins  int
	ready chan struct{} // closed when the download ended (err says how)
	err   error
	elem  *list.Element // in lru while ready and unpinned
}

// New returns a cache of st's objects under dir holding at most maxBytes
// of copies (maxBytes <= 0: defaults.CacheBytes) besides those pinned. Copies left in dir by an earlier process are adopted (objects
// never change under a key), temp files of unfinished downloads deleted.
// A store with local files (objstore.Local) is read in place: nothing is
// copied and dir is not used. reg (nil: none) receives the cache's
// metrics.
func New(st objstore.Store, dir string, maxBytes int64, reg prometheus.Registerer) (*Cache, error) {
	if maxBytes <= 0 {
		maxBytes = defaults.CacheBytes
	}
	c := &Cache{st: st, dir: dir, max: maxBytes, sem: make(chan struct{}, parallel), entries: map[string]*entry{}, lru: list.New()}
	var err error
	if c.hits, err = metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "braid_objcache_hits_total", Help: "Objects found in the local cache."})); err != nil {
		return nil, err
	}
	if c.misses, err = metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "braid_objcache_downloads_total", Help: "Objects downloaded into the local cache."})); err != nil {
		return nil, err
	}
	if c.evictions, err = metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "braid_objcache_evictions_total", Help: "Copies removed from the local cache to keep it in its bound."})); err != nil {
		return nil, err
	}
	if c.bytes, err = metrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "braid_objcache_bytes", Help: "Bytes of the copies in the local cache."})); err != nil {
		return nil, err
	}
	if l, ok := st.(objstore.Local); ok {
		c.local = l
		return c, nil
	}
	if err := fsatomic.MkdirAllSync(dir); err != nil {
		return nil, fmt.Errorf("objcache: create %s: %w", dir, err)
	}
	if err := c.adopt(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.evict()
	c.mu.Unlock()
	return c, nil
}

// adopt takes in the copies an earlier process left, oldest use first
// (by modification time, which Acquire does not update: good enough).
func (c *Cache) adopt() error {
	type found struct {
		key  string
		size int64
		mod  int64
	}
	var all []found
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), fsatomic.TempPrefix) || !d.Type().IsRegular() {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(c.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if objstore.ValidKey(key) != nil {
			return os.Remove(p)
		}
		all = append(all, found{key, info.Size(), info.ModTime().UnixNano()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("objcache: adopt %s: %w", c.dir, err)
	}
	// Oldest first into the LRU list.
	for i := 1; i < len(all); i++ {
		for j := i; j > 0 && all[j].mod < all[j-1].mod; j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	for _, f := range all {
		e := &entry{key: f.key, path: filepath.Join(c.dir, filepath.FromSlash(f.key)), size: f.size, ready: closed}
		e.elem = c.lru.PushBack(e)
		c.entries[f.key] = e
		c.total += f.size
	}
	c.bytes.Set(float64(c.total))
	return nil
}

var closed = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// Acquire returns local paths of the objects under keys (in order),
// downloading the missing ones (a few at once; one download per key however
// many callers want it). The files are read-only and stay until release is
// called (release may be called more than once; after an error nothing
// stays pinned). A missing object's error wraps objstore.ErrNotFound.
func (c *Cache) Acquire(ctx context.Context, keys ...string) (paths []string, release func(), err error) {
	paths = make([]string, len(keys))
	if c.local != nil {
		for i, k := range keys {
			p, err := c.local.LocalPath(k)
			if err != nil {
				return nil, func() {}, err
			}
			if _, err := c.st.Stat(ctx, k); err != nil {
				return nil, func() {}, err
			}
			paths[i] = p
		}
		return paths, func() {}, nil
	}
	for _, k := range keys {
		if err := objstore.ValidKey(k); err != nil {
			return nil, func() {}, err
		}
	}
	// Pin every key; start the downloads nobody runs yet.
	pinned := make([]*entry, 0, len(keys))
	var todo []*entry
	c.mu.Lock()
	for _, k := range keys {
		e := c.entries[k]
		if e == nil {
			e = &entry{key: k, path: filepath.Join(c.dir, filepath.FromSlash(k)), ready: make(chan struct{})}
			c.entries[k] = e
			todo = append(todo, e)
			c.misses.Inc()
		} else {
			c.hits.Inc()
		}
		c.pin(e)
		pinned = append(pinned, e)
	}
	c.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, e := range pinned {
				c.unpin(e)
			}
			c.evict()
		})
	}
	c.download(ctx, todo)
	for i, e := range pinned {
		select {
		case <-e.ready:
		case <-ctx.Done():
			release()
			return nil, func() {}, fmt.Errorf("objcache: acquire %s: %w", e.key, ctx.Err())
		}
		if e.err != nil {
			release()
			return nil, func() {}, e.err
		}
		paths[i] = e.path
	}
	return paths, release, nil
}

// download starts fetching the entries (each owned by this call), at
// most parallel at once in the cache, and marks each ready when done (or
// failed: then it leaves the map, and the next Acquire tries again). The
// downloads do not end with ctx: other callers may wait for them.
func (c *Cache) download(ctx context.Context, todo []*entry) {
	ctx = context.WithoutCancel(ctx)
	for _, e := range todo {
		go func() {
			c.sem <- struct{}{}
			defer func() { <-c.sem }()
			err := c.st.Download(ctx, e.key, e.path)
			var size int64
			if err == nil {
				var info os.FileInfo
				if info, err = os.Stat(e.path); err == nil {
					size = info.Size()
				} else {
					err = fmt.Errorf("objcache: %w", err)
				}
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if err != nil {
				e.err = err
				delete(c.entries, e.key)
				_ = os.Remove(e.path)
			} else {
				e.size = size
				c.total += size
				c.bytes.Set(float64(c.total))
				if e.pins == 0 { // every caller gave up waiting
					e.elem = c.lru.PushBack(e)
					c.evict()
				}
			}
			close(e.ready)
		}()
	}
}

// pin and unpin keep e out of, and put it back in, the LRU list (c.mu held).
func (c *Cache) pin(e *entry) {
	if e.elem != nil {
		c.lru.Remove(e.elem)
		e.elem = nil
	}
	e.pins++
}

func (c *Cache) unpin(e *entry) {
	e.pins--
	if e.pins == 0 && isReady(e) && e.err == nil && c.entries[e.key] == e {
		e.elem = c.lru.PushBack(e)
	}
}

func isReady(e *entry) bool {
	select {
	case <-e.ready:
		return true
	default:
		return false
	}
}

// evict removes least recently used unpinned copies while the total is
// beyond the bound (c.mu held). Pinned copies count but stay: the total
// may exceed the bound while they are in use.
func (c *Cache) evict() {
	for c.total > c.max && c.lru.Len() > 0 {
		e := c.lru.Remove(c.lru.Front()).(*entry)
		e.elem = nil
		delete(c.entries, e.key)
		c.total -= e.size
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Warn("objcache: remove a copy", "path", e.path, "err", err)
		}
		c.evictions.Inc()
	}
	c.bytes.Set(float64(c.total))
}

// Bytes is the size of the copies the cache holds (pinned or not).
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
