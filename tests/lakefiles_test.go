package tests

import (
	"path/filepath"
	"testing"

	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
)

// lakeFiles returns the committed files of a stream of the lake under
// dataDir: those its manifest lists (the directory also holds files
// written and never committed, and files compaction replaced, until they
// are swept).
func lakeFiles(t *testing.T, dataDir, stream string) []string {
	t.Helper()
	lk, err := lake.OpenReadOnly(filepath.Join(dataDir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := lk.Files(stream)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// lakeSource is a DuckDB table expression over lakeFiles (which must not
// be empty).
func lakeSource(t *testing.T, dataDir, stream string) string {
	t.Helper()
	files := lakeFiles(t, dataDir, stream)
	if len(files) == 0 {
		t.Fatalf("no committed lake files of %s", stream)
	}
	return storagetest.ParquetSource(files)
}
