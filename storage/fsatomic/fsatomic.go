// Package fsatomic holds the file-system steps that make local stores
// crash-safe: a file appears under its name whole or not at all (written to a
// temp name, fsynced, renamed, directory fsynced), and directories created
// are durable. The lake and the batch view store share them.
package fsatomic

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// TempPrefix starts the name of every file being written; such files are
// never part of a store, and a store's recovery deletes them.
const TempPrefix = ".tmp-"

var tempCounter atomic.Uint64

// WriteFileAtomic writes a file under dir/name so that readers see either
// nothing or the whole file: it writes a temp file in the same directory,
// fsyncs it, renames it into place and fsyncs the directory.
func WriteFileAtomic(dir, name string, write func(w io.Writer) error) (size int64, err error) {
	tmp := filepath.Join(dir, TempPrefix+name+"-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"-"+strconv.FormatUint(tempCounter.Add(1), 36))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = write(f); err != nil {
		return 0, err
	}
	if err = f.Sync(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err = f.Close(); err != nil {
		return 0, err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return 0, err
	}
	if err = SyncDir(dir); err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// SyncDir fsyncs a directory so that renames and creations in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// MkdirAllSync creates dir (and parents) and fsyncs the parent of every
// directory it created.
func MkdirAllSync(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	return SyncDir(parent)
}
