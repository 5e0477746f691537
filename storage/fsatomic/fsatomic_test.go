package fsatomic_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braid-data/braid/storage/fsatomic"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := fsatomic.MkdirAllSync(dir); err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("braid ", 1000)
	n, err := fsatomic.WriteFileAtomic(dir, "f", func(w io.Writer) error {
		_, err := io.WriteString(w, want)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want || n != int64(len(want)) {
		t.Fatalf("wrote %d bytes %q..., want %d", n, got[:min(len(got), 12)], len(want))
	}

	// A failed write leaves the old file and no temp file behind.
	boom := errors.New("boom")
	if _, err := fsatomic.WriteFileAtomic(dir, "f", func(w io.Writer) error {
		_, _ = io.WriteString(w, "partial")
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != want {
		t.Fatal("a failed write changed the file")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), fsatomic.TempPrefix) {
			t.Fatalf("temp file %s left behind", e.Name())
		}
	}
	if len(ents) != 1 {
		t.Fatalf("%d entries, want 1", len(ents))
	}
}
