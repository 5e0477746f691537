package objstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/braid-data/braid/storage/fsatomic"
)

// Local is a Store whose objects are local files: LocalPath returns the
// file of an object (which exists only if the object does), which callers
// read in place instead of downloading a copy. The file store is one.
type Local interface {
	LocalPath(key string) (string, error)
}

var _ Local = (*Files)(nil)

// LocalPath is the file holding the object under key (ErrInvalidKey for
// a bad key). The file is the object: it must not be modified; it stays
// until the object is deleted.
func (f *Files) LocalPath(key string) (string, error) {
	return f.path(key)
}

// PutFile stores the local file at path as the object key and removes
// path: on a store that can (the file store, on the same file system) the
// file is fsynced and renamed into place, with no copy; otherwise it is
// uploaded with Put and then removed. On error, path may or may not
// remain (the caller removes it), and the object may or may not have been
// stored, as with Put.
func PutFile(ctx context.Context, st Store, key, path string) error {
	if fs, ok := st.(*Files); ok {
		err := fs.moveIn(ctx, key, path)
		if !errors.Is(err, syscall.EXDEV) {
			return err
		}
		// Another file system: copy.
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	err = st.Put(ctx, key, f, info.Size())
	f.Close()
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("objstore: put %s: remove %s: %w", key, path, err)
	}
	return nil
}

// moveIn fsyncs the file at path and renames it to key's name, atomically
// replacing an object there; it returns an error wrapping syscall.EXDEV
// when path is on another file system.
func (f *Files) moveIn(ctx context.Context, key, path string) error {
	p, err := f.forPut(ctx, key)
	if err != nil {
		return err
	}
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	err = src.Sync()
	if cerr := src.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if err := os.Rename(path, p); err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if err := fsatomic.SyncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	return nil
}
