package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/braid-data/braid/storage/fsatomic"
)

// Files is a Store on a local directory: an object is a file whose path
// under the directory is its key. Writes are atomic (fsatomic: temp file,
// fsync, rename, fsync of the directory); PutIfAbsent links the temp file
// to the key's name, which fails when the name is taken, so it is exclusive
// among processes sharing the directory on one file system. Empty
// directories left by Delete stay (a concurrent Put may be about to write
// in them); List ignores them, and everything under a directory whose name
// starts with ".tmp-" (no key has such a segment: a place for local work
// files inside the store's directory).
type Files struct {
	root string
}

var _ Store = (*Files)(nil)

// NewFiles opens a file store under dir, creating it if needed.
func NewFiles(dir string) (*Files, error) {
	if err := fsatomic.MkdirAllSync(dir); err != nil {
		return nil, fmt.Errorf("objstore: create %s: %w", dir, err)
	}
	return &Files{root: dir}, nil
}

// Root is the store's directory.
func (f *Files) Root() string { return f.root }

func (f *Files) path(key string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	return filepath.Join(f.root, filepath.FromSlash(key)), nil
}

// forPut returns the path of key, its directory made, for a write.
func (f *Files) forPut(ctx context.Context, key string) (string, error) {
	p, err := f.path(key)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if err := fsatomic.MkdirAllSync(filepath.Dir(p)); err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", key, err)
	}
	return p, nil
}

// Put writes the object atomically (size is only checked: -1 for unknown).
func (f *Files) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	p, err := f.forPut(ctx, key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	_, err = fsatomic.WriteFileAtomic(dir, filepath.Base(p), func(w io.Writer) error {
		n, err := io.Copy(w, r)
		if err == nil && size >= 0 && n != size {
			err = fmt.Errorf("read %d bytes, expected %d", n, size)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	return nil
}

var tempCounter atomic.Uint64

// PutIfAbsent writes a temp file, fsyncs it and hard-links it to the key's
// name: link(2) fails with EEXIST when the name is taken, so exactly one of
// racing writers wins, and the name holds the whole object from the start.
func (f *Files) PutIfAbsent(ctx context.Context, key string, data []byte) (err error) {
	p, err := f.forPut(ctx, key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("%w: %s", ErrExists, key)
	}
	tmp := filepath.Join(dir, tempPrefix+filepath.Base(p)+"-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"-"+strconv.FormatUint(tempCounter.Add(1), 36))
	defer os.Remove(tmp) // the link, if made, keeps the object
	w, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	_, err = io.Copy(w, bytes.NewReader(data))
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if err := os.Link(tmp, p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, key)
		}
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if err := fsatomic.SyncDir(dir); err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	return nil
}

// Open returns a reader of the object.
func (f *Files) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, err
	}
	r, err := os.Open(p)
	if err != nil {
		return nil, f.err("open", key, err)
	}
	if st, err := r.Stat(); err == nil && st.IsDir() {
		r.Close()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return r, nil
}

// Get reads the whole object.
func (f *Files) Get(ctx context.Context, key string) ([]byte, error) {
	r, err := f.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("objstore: get %s: %w", key, err)
	}
	return data, nil
}

// Download copies the object to path atomically.
func (f *Files) Download(ctx context.Context, key, path string) error {
	r, err := f.Open(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	return writeLocal(key, path, r)
}

// writeLocal writes r to path atomically (shared by both stores' Download).
func writeLocal(key, path string, r io.Reader) error {
	dir := filepath.Dir(path)
	if err := fsatomic.MkdirAllSync(dir); err != nil {
		return fmt.Errorf("objstore: download %s: %w", key, err)
	}
	if _, err := fsatomic.WriteFileAtomic(dir, filepath.Base(path), func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	}); err != nil {
		return fmt.Errorf("objstore: download %s to %s: %w", key, path, err)
	}
	return nil
}

// Stat returns the object's size.
func (f *Files) Stat(ctx context.Context, key string) (Object, error) {
	p, err := f.path(key)
	if err != nil {
		return Object{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return Object{}, f.err("stat", key, err)
	}
	if st.IsDir() {
		return Object{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return Object{Key: key, Size: st.Size()}, nil
}

// Delete removes the object's file (and fsyncs its directory).
func (f *Files) Delete(ctx context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if st, err := os.Lstat(p); err == nil && st.IsDir() {
		return nil // a directory of other keys, not an object
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	if err := fsatomic.SyncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	return nil
}

// List walks the directory holding the prefix's last complete segment and
// keeps the regular files whose keys start with prefix.
func (f *Files) List(ctx context.Context, prefix string) ([]Object, error) {
	base := f.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = filepath.Join(f.root, filepath.FromSlash(prefix[:i]))
	}
	var out []Object
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // the prefix's directory, or one deleted during the walk
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) && p != base {
			if d.IsDir() {
				return fs.SkipDir // a work directory (no key has such a segment)
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted during the walk
			}
			return err
		}
		out = append(out, Object{Key: key, Size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: list %q: %w", prefix, err)
	}
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// err maps a missing file (or a file where a directory of the key should
// be) to ErrNotFound.
func (f *Files) err(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("objstore: %s %s: %w", op, key, err)
}
