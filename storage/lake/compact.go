package lake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/logic"
)

// Compact merges the small files of stream partition p, per date
// partition, into files of about targetBytes, replacing them in one
// commit: a reader of the stream's manifests sees the old files or the
// new, never both, never neither. A file is small below targetBytes/2; the
// files merged into one are of one date, one stream partition and one
// schema epoch, that of s's current field types (files of older epochs
// stay as they are), taken in order of their first record until they
// reach targetBytes; each row is copied as it is (its _part, _seq, _idx,
// arrival and values; a file written before stream partitions gets _part
// 0). The replaced files stay in the store for the lake's grace period
// (Sweep deletes them), so readers holding the older manifest still read
// them. Safe while writers (of this Lake or others) write and commit the
// stream: the replacement is committed on top of whatever was committed
// meanwhile, and a merge whose files changed meanwhile (retention, another
// compaction) is left for the next call, as is one whose output another
// writer's recovery listed as garbage.
func (l *Lake) Compact(ctx context.Context, s *logic.Stream, p int, targetBytes int64) (CompactStats, error) {
	var stats CompactStats
	if l.readOnly {
		return stats, errors.New("lake: read-only")
	}
	if targetBytes <= 0 {
		return stats, fmt.Errorf("lake: compact %s: target size %d", s.Name, targetBytes)
	}
	lay, err := l.layoutOf(s)
	if err != nil {
		return stats, err
	}
	w := l.writerOf(s.Name)
	w.mu.Lock()
	err = l.load(ctx, s.Name, w)
	snap := w.cur
	w.mu.Unlock()
	if err != nil {
		return stats, err
	}
	bins := compactBins(snap, p, fieldNames(s), targetBytes)
	if len(bins) == 0 {
		return stats, nil
	}
	type merged struct {
		in  []FileInfo
		out FileInfo
	}
	var done []merged
	defer func() { // outputs not committed are deleted (nothing lists them)
		l.mu.Lock()
		for _, m := range done {
			delete(l.inflight, m.out.Key)
		}
		l.mu.Unlock()
	}()
	dropOutputs := func(ms []merged) {
		for _, m := range ms {
			if err := l.st.Delete(context.WithoutCancel(ctx), m.out.Key); err != nil {
				l.log.Warn("lake: delete an uncommitted compacted file", "key", m.out.Key, "err", err)
			}
		}
	}
	for _, in := range bins {
		out, ok, err := l.merge(ctx, s, lay, in, snap.Gen+1)
		if err != nil {
			dropOutputs(done)
			return CompactStats{}, err
		}
		if ok {
			done = append(done, merged{in, out})
		}
	}
	if len(done) == 0 {
		return stats, nil
	}
	var stale []merged
	err = l.update(ctx, s.Name, func(next *Manifest) (bool, error) {
		stats, stale = CompactStats{}, nil
		present := map[string]bool{}
		for _, f := range next.Files {
			present[f.Key] = true
		}
		garbage := map[string]bool{}
		for _, g := range next.Garbage {
			garbage[g.Key] = true
		}
		now := time.Now().UTC()
		gone := map[string]bool{}
		parts := map[string]bool{}
		for _, m := range done {
			ok := !garbage[m.out.Key]
			for _, f := range m.in {
				ok = ok && present[f.Key]
			}
			if !ok {
				stale = append(stale, m)
				continue
			}
			for _, f := range m.in {
				gone[f.Key] = true
				next.Garbage = append(next.Garbage, Removed{Key: f.Key, Removed: now})
			}
			next.Files = append(next.Files, m.out)
			parts[m.out.Date] = true
			stats.FilesIn += len(m.in)
			stats.FilesOut++
			stats.Bytes += m.out.Bytes
		}
		next.Files = slices.DeleteFunc(next.Files, func(f FileInfo) bool { return gone[f.Key] })
		sortFiles(next.Files)
		stats.Partitions = len(parts)
		return stats.FilesOut > 0, nil
	})
	if err != nil {
		dropOutputs(done)
		return CompactStats{}, err
	}
	dropOutputs(stale)
	if stats.FilesOut > 0 {
		l.log.Info("lake: compacted", "stream", s.Name, "partitions", stats.Partitions, "files_in", stats.FilesIn, "files_out", stats.FilesOut, "bytes", stats.Bytes)
	}
	return stats, nil
}

// compactBins picks the runs of small files of stream partition p of m
// to merge: per date and schema epoch (only the epoch of fields), files
// below target/2 in order of first record, cut when a run reaches target;
// runs of one file stay.
func compactBins(m *Manifest, p int, fields map[string]string, target int64) [][]FileInfo {
	type group struct {
		date  string
		epoch int
	}
	groups := map[group][]FileInfo{}
	var order []group
	for _, f := range m.Files { // by first record
		if f.Part != p || f.Bytes >= target/2 {
			continue
		}
		e := epochOf(m.Epochs, p, f.First)
		if e < 0 || !maps.Equal(m.Epochs[e].Fields, fields) {
			continue
		}
		g := group{f.Date, e}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], f)
	}
	var bins [][]FileInfo
	for _, g := range order {
		var bin []FileInfo
		var size int64
		flush := func() {
			if len(bin) > 1 {
				bins = append(bins, bin)
			}
			bin, size = nil, 0
		}
		for _, f := range groups[g] {
			bin = append(bin, f)
			size += f.Bytes
			if size >= target {
				flush()
			}
		}
		flush()
	}
	return bins
}

// merge writes the rows of files in (one date, one stream partition, in
// order) as one file of lay's schema and returns what the manifest will
// say of it; ok is false when a file's schema is neither lay's nor lay's
// before stream partitions (it is left alone).
func (l *Lake) merge(ctx context.Context, s *logic.Stream, lay *layout, in []FileInfo, gen uint64) (out FileInfo, ok bool, err error) {
	keys := make([]string, len(in))
	out = FileInfo{Date: in[0].Date, Part: in[0].Part, First: in[0].First, Last: in[0].Last, MinArrival: in[0].MinArrival, MaxArrival: in[0].MaxArrival,
		MinTime: in[0].MinTime, MaxTime: in[0].MaxTime}
	for i, f := range in {
		keys[i] = f.Key
		out.First, out.Last = min(out.First, f.First), max(out.Last, f.Last)
		out.MinArrival, out.MaxArrival = min(out.MinArrival, f.MinArrival), max(out.MaxArrival, f.MaxArrival)
		out.MinTime, out.MaxTime = min(out.MinTime, f.MinTime), max(out.MaxTime, f.MaxTime)
		out.Rows += f.Rows
	}
	paths, release, err := l.Local(ctx, keys)
	if err != nil {
		return FileInfo{}, false, err
	}
	defer release()
	files := make([]*parquet.File, len(paths))
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return FileInfo{}, false, fmt.Errorf("lake: compact %s: %w", s.Name, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return FileInfo{}, false, fmt.Errorf("lake: compact %s: %w", s.Name, err)
		}
		pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipBloomFilters(true))
		if err != nil {
			return FileInfo{}, false, fmt.Errorf("lake: compact %s: read %s: %w", s.Name, in[i].Key, err)
		}
		if !parquet.EqualNodes(pf.Schema(), lay.schema) && !parquet.EqualNodes(pf.Schema(), lay.legacy.schema) {
			l.log.Warn("lake: a file's schema is not its epoch's; not compacted", "key", in[i].Key)
			return FileInfo{}, false, nil
		}
		files[i] = pf
	}
	out.Key = dataKey(s.Name, out.Date, out.Part, out.First, out.Last, fmt.Sprintf("c%d", gen))
	l.mu.Lock()
	l.inflight[out.Key] = true
	l.mu.Unlock()
	var rows int64
	n, err := l.putParquet(ctx, out.Key, lay, func(pw *parquet.Writer) error {
		for _, pf := range files {
			legacy := !parquet.EqualNodes(pf.Schema(), lay.schema)
			for _, rg := range pf.RowGroups() {
				if err := ctx.Err(); err != nil {
					return err
				}
				rr := rg.Rows()
				var c int64
				var err error
				if legacy {
					c, err = lay.copyLegacy(pw, rr)
				} else {
					c, err = parquet.CopyRows(pw, rr)
				}
				rr.Close()
				if err != nil {
					return err
				}
				rows += c
			}
		}
		return nil
	})
	if err == nil && rows != out.Rows {
		err = fmt.Errorf("lake: compact %s: copied %d rows, the manifest lists %d", s.Name, rows, out.Rows)
		_ = l.st.Delete(context.WithoutCancel(ctx), out.Key)
	}
	if err != nil {
		l.mu.Lock()
		delete(l.inflight, out.Key)
		l.mu.Unlock()
		return FileInfo{}, false, err
	}
	out.Bytes = n
	return out, true, nil
}

// copyLegacy copies the rows of a file written before stream partitions
// (lay.legacy's schema) to pw (lay's), each with ColPart 0: the values
// move to their column in lay's schema by name, their levels kept.
func (lay *layout) copyLegacy(pw *parquet.Writer, rr parquet.Rows) (int64, error) {
	old := lay.legacy.schema.Columns()
	to := make([]int, len(old))
	for i, path := range old {
		c, ok := lay.schema.Lookup(path...)
		if !ok {
			return 0, fmt.Errorf("lake: column %v missing from schema", path)
		}
		to[i] = c.ColumnIndex
	}
	in := make([]parquet.Row, writeBatch)
	out := make([]parquet.Row, writeBatch)
	var n int64
	for {
		k, err := rr.ReadRows(in)
		for j, r := range in[:k] {
			if cap(out[j]) < lay.ncols {
				out[j] = make(parquet.Row, lay.ncols)
			}
			o := out[j][:lay.ncols]
			for _, v := range r {
				c := to[v.Column()]
				o[c] = v.Level(v.RepetitionLevel(), v.DefinitionLevel(), c)
			}
			o[lay.partCol] = parquet.Int32Value(0).Level(0, 0, lay.partCol)
			out[j] = o
		}
		if k > 0 {
			if _, werr := pw.WriteRows(out[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
