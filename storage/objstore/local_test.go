package objstore_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/braid-data/braid/storage/fsatomic"
	"github.com/braid-data/braid/storage/objstore"
)

// PutFile moves a local file into the file store (no copy), and the
// store lists no work directory inside it.
func TestPutFileMovesIntoFileStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := objstore.NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, fsatomic.TempPrefix+"work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(work, "x")
	if err := os.WriteFile(src, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(src)
	if err := objstore.PutFile(ctx, st, "a/b.bin", src); err != nil {
		t.Fatal(err)
	}
	p, _ := st.LocalPath("a/b.bin")
	after, err := os.Stat(p)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("not moved: %v", err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatalf("source left: %v", err)
	}
	r, err := st.Open(ctx, "a/b.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}
	if err := os.WriteFile(filepath.Join(work, "y"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := st.List(ctx, "")
	if err != nil || len(objs) != 1 || objs[0].Key != "a/b.bin" {
		t.Fatalf("List = %v %v", objs, err)
	}
}
