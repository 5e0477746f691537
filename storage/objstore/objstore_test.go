package objstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braid-data/braid/storage/fsatomic"
	"github.com/braid-data/braid/storage/objstore"
)

func TestValidKey(t *testing.T) {
	for _, k := range []string{"a", "a/b/c.parquet", "v 1/x=3/ü+%#?.bin", "a.tmp-x", strings.Repeat("k", 1024)} {
		if err := objstore.ValidKey(k); err != nil {
			t.Errorf("ValidKey(%q): %v", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", ".", "a/./b", "a/..", "a\\b", "a\x7fb", "a\tb", ".tmp-x", "a/.tmp-b/c", "\xc3", strings.Repeat("k", 1025)} {
		if err := objstore.ValidKey(k); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("ValidKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}

// TestFilesIgnoresTempFiles: what a writer that crashed mid-write left (a
// temp file) is no object: not listed, not readable, and the key stays free.
func TestFilesIgnoresTempFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := objstore.NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutIfAbsent(ctx, "m/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "m", fsatomic.TempPrefix+"b-123"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := st.List(ctx, "")
	if err != nil || len(l) != 1 || l[0].Key != "m/a" {
		t.Fatalf("List = %v, %v; want only m/a", l, err)
	}
	if err := st.PutIfAbsent(ctx, "m/b", []byte("b")); err != nil {
		t.Fatalf("PutIfAbsent beside a temp file: %v", err)
	}
}

// TestFilesKeyAndDirectory: on files a key cannot also be the directory of
// another key; the store says so with an error, and stores nothing.
func TestFilesKeyAndDirectory(t *testing.T) {
	ctx := context.Background()
	st, err := objstore.NewFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "a", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "a/b", strings.NewReader("y"), 1); err == nil {
		t.Fatalf("Put a/b beside the object a succeeded")
	}
	if err := st.PutIfAbsent(ctx, "c/d", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := st.PutIfAbsent(ctx, "c", []byte("x")); err == nil {
		t.Fatalf("PutIfAbsent c over the directory of c/d succeeded")
	}
	if _, err := st.Get(ctx, "c"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get of a directory: %v, want ErrNotFound", err)
	}
	if _, err := st.Get(ctx, "a/b"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get under an object: %v, want ErrNotFound", err)
	}
	l, err := st.List(ctx, "")
	if err != nil || len(l) != 2 || l[0].Key != "a" || l[1].Key != "c/d" {
		t.Fatalf("List = %v, %v; want a, c/d", l, err)
	}
}
