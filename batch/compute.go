package batch

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
)

// LakeObjects gives local copies of lake objects, which DuckDB reads.
//
// Local returns a local path for each key, in order, readable until
// release is called (which must be called once, also after an error is
// not returned); an error means no copy could be had (a later call may
// succeed). Safe for concurrent use. (*lake.Lake).Local satisfies it.
type LakeObjects interface {
	Local(ctx context.Context, keys []string) (paths []string, release func(), err error)
}

// PartWriter stores the rows of one unit.
//
// WritePart stores the rows of view v whose window start falls on date
// (YYYY-MM-DD), computed by run, and returns their Part (no rows: a Part
// without an object); nothing refers to it until a version lists it, and
// writing the same unit again (a unit handed out twice) is harmless. Safe
// for concurrent use; an error means the part may not be stored.
// (*batchviews.Store).WritePart satisfies it.
type PartWriter interface {
	WritePart(ctx context.Context, v *logic.View, date, run string, rows []batchviews.Row) (batchviews.Part, error)
}

// ComputeConfig configures a worker's DuckDB.
type ComputeConfig struct {
	Threads int    // DuckDB threads (0: DuckDB's default)
	Memory  string // DuckDB memory_limit, e.g. "1GB" ("": default)
}

// Computer is the UnitComputer of a worker: one DuckDB for every unit it
// computes, reading local copies of the unit's lake files, writing the
// unit's rows as a part. Views come from the worker's catalog: a unit of a
// view it does not have, or has under another definition, is refused.
type Computer struct {
	cfg   ComputeConfig
	lk    LakeObjects
	parts PartWriter
	cat   *config.Catalog

	once sync.Once
	db   *sql.DB
	err  error
}

// NewComputer returns a computer; its DuckDB opens at the first unit.
func NewComputer(cfg ComputeConfig, lk LakeObjects, parts PartWriter, cat *config.Catalog) *Computer {
	return &Computer{cfg: cfg, lk: lk, parts: parts, cat: cat}
}

// Close closes the computer's DuckDB.
func (c *Computer) Close() error {
	if c.db != nil {
		return c.db.Close()
	}
	return nil
}

func (c *Computer) open(ctx context.Context) (*sql.DB, error) {
	c.once.Do(func() {
		db, err := openDuckDB(ctx, c.cfg.Threads, c.cfg.Memory)
		c.db, c.err = db, err
	})
	return c.db, c.err
}

// openDuckDB opens an in-memory DuckDB with the given threads and memory
// limit (global settings).
func openDuckDB(ctx context.Context, threads int, memory string) (*sql.DB, error) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return nil, fmt.Errorf("batch: open duckdb: %w", err)
	}
	if threads > 0 {
		if _, err := db.ExecContext(ctx, fmt.Sprintf("SET threads = %d", threads)); err != nil {
			db.Close()
			return nil, fmt.Errorf("batch: duckdb threads: %w", err)
		}
	}
	if memory != "" {
		if _, err := db.ExecContext(ctx, "SET memory_limit = "+quoteString(memory)); err != nil {
			db.Close()
			return nil, fmt.Errorf("batch: duckdb memory_limit: %w", err)
		}
	}
	return db, nil
}

// Compute implements UnitComputer: the view's rows with window start on
// the unit's date, from the rows of its files that arrived before its
// cutoff, stored with WritePart.
func (c *Computer) Compute(ctx context.Context, u Unit) (UnitResult, error) {
	v, ok := c.cat.Views[u.View]
	if !ok {
		return UnitResult{Err: fmt.Sprintf("this worker's catalog has no view %s", u.View)}, nil
	}
	if def := v.Definition(); def != u.Definition || v.Stream.Name != u.Stream {
		return UnitResult{Err: fmt.Sprintf("this worker's catalog defines view %s as %s on stream %s, the run as %s on stream %s", u.View, def, v.Stream.Name, u.Definition, u.Stream)}, nil
	}
	lo, err := dateMs(u.Date)
	if err != nil {
		return UnitResult{Err: err.Error()}, nil
	}
	db, err := c.open(ctx)
	if err != nil {
		return UnitResult{}, err
	}
	paths, release, err := c.lk.Local(ctx, u.Keys())
	if err != nil {
		return UnitResult{}, fmt.Errorf("batch: unit %s: lake files: %w", u.ID(), err)
	}
	defer release()
	if len(paths) != len(u.Files) {
		return UnitResult{}, fmt.Errorf("batch: unit %s: %d local copies of %d files", u.ID(), len(paths), len(u.Files))
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return UnitResult{}, fmt.Errorf("batch: duckdb: %w", err)
	}
	defer conn.Close()
	res := UnitResult{FileRows: make(map[string]int64, len(u.Files))}
	for i, f := range u.Files {
		n, err := rowsBefore(ctx, conn, f.Rows, f.MinArrival, f.MaxArrival, paths[i], u.Cutoff)
		if err != nil {
			return UnitResult{}, fmt.Errorf("batch: unit %s: read %s: %w", u.ID(), f.Key, err)
		}
		res.FileRows[f.Key] = n
		res.RowsRead += n
	}
	hi := lo + dayMs
	// Only events before hi+size can fall in a window starting before hi.
	src := fmt.Sprintf("(SELECT * FROM (%s) AS l WHERE %s >= %d AND %s < %d)", sourceSQL(v.Stream, paths), "_time", lo, "_time", hi+v.Window.Size.Milliseconds())
	rows, err := queryView(ctx, conn, v, src, u.Cutoff, lo, hi)
	if err != nil {
		return UnitResult{}, fmt.Errorf("batch: unit %s: %w", u.ID(), err)
	}
	part, err := c.parts.WritePart(ctx, v, u.Date, u.Run, rows)
	if err != nil {
		return UnitResult{}, fmt.Errorf("batch: unit %s: write part: %w", u.ID(), err)
	}
	part.Date, part.Run, part.Cutoff = u.Date, u.Run, u.Cutoff
	res.Part = part
	return res, nil
}

// rowsBefore counts a file's rows that arrived before cutoff: from its
// manifest entry when every row is on one side, else from the file.
func rowsBefore(ctx context.Context, conn *sql.Conn, rows, minArrival, maxArrival int64, path string, cutoff int64) (int64, error) {
	switch {
	case maxArrival < cutoff:
		return rows, nil
	case minArrival >= cutoff:
		return 0, nil
	}
	var n int64
	err := conn.QueryRowContext(ctx, fmt.Sprintf("SELECT count(*) FROM read_parquet(%s, hive_partitioning = false) WHERE _arrival < %d", quoteString(path), cutoff)).Scan(&n)
	return n, err
}
