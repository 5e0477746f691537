package lake

// An earlier version kept a stream's state in two small files replaced by
// rename, <stream>/checkpoint.json and <stream>/schema.json (or no schema
// record at all: the types were in the files' footers), and a file was
// committed when its name's range ended at or before the checkpoint. Such
// a stream reads as the manifest its state amounts to (Gen 0), and its
// writer commits that as generation 1 at first use (load); the old files
// stay where they are, and the two state files are no longer read once a
// manifest exists.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/storage/objstore"
)

const (
	legacyCheckpoint = "checkpoint.json"
	legacySchema     = "schema.json"
)

// legacyManifest is the manifest an earlier version's stream amounts to
// (an empty one, found false, when the stream has no checkpoint). It is
// kept per checkpoint: reading it again costs one small read.
func (l *Lake) legacyManifest(ctx context.Context, stream string) (m *Manifest, found bool, err error) {
	b, err := l.st.Get(ctx, stream+"/"+legacyCheckpoint)
	if errors.Is(err, objstore.ErrNotFound) {
		return &Manifest{}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("lake: read checkpoint %s: %w", stream, err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, false, fmt.Errorf("lake: decode checkpoint %s: %w", stream, err)
	}
	l.mu.Lock()
	old := l.legacy[stream]
	l.mu.Unlock()
	if old != nil && old.Checkpoint == cp {
		return old, true, nil
	}
	objs, err := l.st.List(ctx, stream+"/date=")
	if err != nil {
		return nil, false, fmt.Errorf("lake: list %s: %w", stream, err)
	}
	m = &Manifest{Checkpoint: cp}
	for _, o := range objs {
		date := dateOfKey(o.Key)
		first, last, legacy, ok := parseFileName(o.Key[strings.LastIndexByte(o.Key, '/')+1:])
		if date == "" || !ok || !legacy || last > cp.Seq || first == 0 {
			continue
		}
		m.Files = append(m.Files, FileInfo{Key: o.Key, Date: date, First: first, Last: last, Bytes: o.Size})
	}
	sortFiles(m.Files)
	keys := make([]string, len(m.Files))
	for i, f := range m.Files {
		keys[i] = f.Key
	}
	paths, release, err := l.Local(ctx, keys)
	if err != nil {
		return nil, false, err
	}
	defer release()
	for i := range m.Files {
		if err := fileStats(paths[i], &m.Files[i], cp.Arrival); err != nil {
			return nil, false, err
		}
	}
	rb, err := l.st.Get(ctx, stream+"/"+legacySchema)
	switch {
	case errors.Is(err, objstore.ErrNotFound):
		if m.Epochs, err = epochsFromFooters(m.Files, paths); err != nil {
			return nil, false, err
		}
	case err != nil:
		return nil, false, fmt.Errorf("lake: read schema record %s: %w", stream, err)
	default:
		var rec schemaRecord
		if err := json.Unmarshal(rb, &rec); err != nil {
			return nil, false, fmt.Errorf("lake: decode schema record %s: %w", stream, err)
		}
		if err := rec.check(stream); err != nil {
			return nil, false, err
		}
		m.Epochs = committedEpochs(rec.Epochs, cp.Seq)
	}
	l.mu.Lock()
	l.legacy[stream] = m
	l.mu.Unlock()
	return m, true, nil
}

// fileStats fills in what a manifest says of a file from the file: its
// rows, and the bounds of its arrivals and event times (from its pages'
// statistics; where a page has none, the arrival bound is maxArrival, the
// checkpoint's, which is at or after every committed row's).
func fileStats(path string, fi *FileInfo, maxArrival int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("lake: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("lake: %w", err)
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipBloomFilters(true))
	if err != nil {
		return fmt.Errorf("lake: read footer of %s: %w", path, err)
	}
	fi.Rows = pf.NumRows()
	fi.Bytes = st.Size()
	bounds := func(name string) (lo, hi int64, ok bool, err error) {
		leaf, found := pf.Schema().Lookup(name)
		if !found {
			return 0, 0, false, nil
		}
		have := false
		for _, rg := range pf.RowGroups() {
			pages := rg.ColumnChunks()[leaf.ColumnIndex].Pages()
			for {
				p, err := pages.ReadPage()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					pages.Close()
					return 0, 0, false, fmt.Errorf("lake: read %s of %s: %w", name, path, err)
				}
				if p.NumValues() == 0 {
					continue
				}
				mn, mx, ok := p.Bounds()
				if !ok {
					pages.Close()
					return 0, 0, false, nil
				}
				if !have || mn.Int64() < lo {
					lo = mn.Int64()
				}
				if !have || mx.Int64() > hi {
					hi = mx.Int64()
				}
				have = true
			}
			pages.Close()
		}
		return lo, hi, have, nil
	}
	lo, hi, ok, err := bounds(ColArrival)
	if err != nil {
		return err
	}
	if ok {
		fi.MinArrival, fi.MaxArrival = lo, hi
	} else {
		fi.MinArrival, fi.MaxArrival = 0, maxArrival
	}
	if lo, hi, ok, err = bounds(ColTime); err != nil {
		return err
	}
	if ok {
		fi.MinTime, fi.MaxTime = lo, hi
	} else if d, err := time.Parse("2006-01-02", fi.Date); err == nil {
		fi.MinTime, fi.MaxTime = d.UnixMilli(), d.UnixMilli()+msPerDay-1
	}
	return nil
}

// emptyStore is the store of a lake directory that does not exist (read
// only): it holds nothing.
type emptyStore struct{}

func (emptyStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return errors.New("lake: read-only")
}
func (emptyStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	return errors.New("lake: read-only")
}
func (emptyStore) Get(ctx context.Context, key string) ([]byte, error) {
	return nil, fmt.Errorf("%w: %s", objstore.ErrNotFound, key)
}
func (emptyStore) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("%w: %s", objstore.ErrNotFound, key)
}
func (emptyStore) Download(ctx context.Context, key, path string) error {
	return fmt.Errorf("%w: %s", objstore.ErrNotFound, key)
}
func (emptyStore) List(ctx context.Context, prefix string) ([]objstore.Object, error) {
	return nil, nil
}
func (emptyStore) Stat(ctx context.Context, key string) (objstore.Object, error) {
	return objstore.Object{}, fmt.Errorf("%w: %s", objstore.ErrNotFound, key)
}
func (emptyStore) Delete(ctx context.Context, key string) error { return nil }
