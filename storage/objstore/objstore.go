// Package objstore stores immutable objects under string keys, on local
// files (NewFiles) or on an S3-compatible object store (NewS3), behind one
// interface, Store. The lake and the batch view versions stand on it: data
// objects are written once under fresh keys, and a commit is a manifest
// object created last with PutIfAbsent, so that of two writers racing to
// the same commit exactly one succeeds.
//
// There is no caching layer: every Get and Download reads the store. The
// bounded local cache of downloaded objects (under data_dir, for DuckDB,
// which reads local files only) is storage/objcache; the file store's
// objects are local files already (Local), and PutFile moves a local file
// into it without a copy.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/braid-data/braid/storage/fsatomic"
)

// tempPrefix starts the names of the file store's files being written.
const tempPrefix = fsatomic.TempPrefix

// Errors a Store returns; every other error wraps its cause with %w.
var (
	// ErrNotFound: no object under the key.
	ErrNotFound = errors.New("objstore: object not found")
	// ErrExists: PutIfAbsent found the key taken; the object is unchanged.
	ErrExists = errors.New("objstore: object already exists")
	// ErrInvalidKey: the key breaks the rules of ValidKey.
	ErrInvalidKey = errors.New("objstore: invalid key")
)

// Object describes a stored object.
type Object struct {
	Key  string
	Size int64
}

// Store holds immutable objects under keys (see ValidKey).
//
// Contract:
//   - Put stores a whole object atomically: a reader sees the object whole
//     or not at all, never a part. Objects are meant to be written once,
//     under fresh keys; a Put to a key that exists replaces it whole
//     (readers see the old or the new bytes), which callers use only to
//     repeat a write that may have failed.
//   - PutIfAbsent creates the object only if the key is free, atomically
//     with that check: of any number of concurrent PutIfAbsent calls on one
//     key (from any process or host), exactly one succeeds and the object
//     holds its bytes; the others return ErrExists. A PutIfAbsent racing a
//     Put on the same key is not defined: commit keys are written with
//     PutIfAbsent only. The bytes go in one request (manifests are small).
//   - Get returns the whole object; Open returns a reader of it, which the
//     caller closes. Both return ErrNotFound for a missing key.
//   - Download writes the object to a local file path, atomically (the path
//     holds the whole object or is left as it was); ErrNotFound for a
//     missing key.
//   - List returns the objects whose keys start with prefix (a plain string
//     prefix, "" for all), sorted by key in byte order; never an object
//     being written. Stat returns one object's size, ErrNotFound if absent.
//   - Delete removes an object; deleting a missing key is no error. After
//     Delete returns, Get, Stat and List no longer see it.
//   - Safe for concurrent use by many goroutines and processes. An error
//     other than ErrExists means the operation may or may not have happened
//     (a Put may have stored the object): callers retry or look.
type Store interface {
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	PutIfAbsent(ctx context.Context, key string, data []byte) error
	Get(ctx context.Context, key string) ([]byte, error)
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	Download(ctx context.Context, key, path string) error
	List(ctx context.Context, prefix string) ([]Object, error)
	Stat(ctx context.Context, key string) (Object, error)
	Delete(ctx context.Context, key string) error
}

// ValidKey checks a key: segments separated by '/', none of them empty, "."
// or "..", none starting with ".tmp-" (the file store's temp files), no
// NUL, backslash or control character, at most 1024 bytes of valid UTF-8.
// Any other character (spaces, '=', '+', '%', '#', '?', non-ASCII letters)
// is allowed. On files a key cannot also be the directory of another key
// ("a" and "a/b"): the store refuses the second with an error.
func ValidKey(key string) error {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, why) }
	if key == "" {
		return bad("empty")
	}
	if len(key) > 1024 {
		return bad("longer than 1024 bytes")
	}
	if !utf8.ValidString(key) {
		return bad("not valid UTF-8")
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return bad("control character or backslash")
		}
	}
	for _, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return bad("empty segment")
		case seg == "." || seg == "..":
			return bad("segment . or ..")
		case strings.HasPrefix(seg, tempPrefix):
			return bad("segment starts with " + tempPrefix)
		}
	}
	return nil
}
