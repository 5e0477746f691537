package batch

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
)

// EntityStore is where batch runs materialise the entities' batch part
// (the online store). *speedstore.Store satisfies it.
//
// EntityMat returns an entity's last materialisation record (found false:
// none: the next one writes every key). WriteEntityDays writes keys'
// events per day up to a cutoff, each key atomically with the cutoff (and
// drops what the cutoff covers of the speed layer's part); keepFrom drops
// days before it. SetEntityMat records a finished materialisation; it is
// called only after every key of it is written. Safe for concurrent use
// with the speed layer's commits; an error leaves the previous record in
// force (the keys written so far are correct under either: each holds its
// own cutoff).
type EntityStore interface {
	EntityMat(ctx context.Context, e *logic.Entity) (speedstore.EntityMat, bool, error)
	WriteEntityDays(ctx context.Context, e *logic.Entity, cutoff, keepFrom int64, keys []speedstore.EntityDays) error
	SetEntityMat(ctx context.Context, e *logic.Entity, m speedstore.EntityMat) error
}

// entityProgress is how often a materialisation logs its progress.
const entityProgress = 5 * time.Second

// materialiseEntities brings every entity's batch part up to its stream's
// lake coverage (logging, not failing, the run when one fails: the
// entity keeps its previous materialisation, and the next run does it).
func (r *Runner) materialiseEntities(ctx context.Context, log *slog.Logger) {
	if r.cfg.Entities == nil {
		return
	}
	for _, name := range sortedEntityNames(r.cat.Entities) {
		e := r.cat.Entities[name]
		if err := r.materialise(ctx, log, e); err != nil {
			log.Error("entity materialisation failed; it keeps its previous one", "entity", name, "err", err)
		}
	}
}

func sortedEntityNames(m map[string]*logic.Entity) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// materialise writes the (key, day)s of an entity that received events
// since its last materialisation, up to the lake's cutoff: one DuckDB
// query over the files of the event dates that changed, each touched key
// and day read whole (every event of it that arrived before the cutoff).
func (r *Runner) materialise(ctx context.Context, log *slog.Logger, e *logic.Entity) error {
	st := r.cfg.Entities
	stream := e.Stream.Name
	m, err := r.lk.Manifest(ctx, stream)
	if err != nil {
		return err
	}
	cutoff := int64(0)
	if cu := m.CoveredUntil(r.partitions(stream)); cu > 0 {
		cutoff = logic.EpochOf(cu, r.cfg.Epoch)
	}
	rec, found, err := st.EntityMat(ctx, e)
	if err != nil {
		return err
	}
	if cutoff == 0 || found && rec.Cutoff >= cutoff {
		return nil
	}
	prev := int64(0)
	if found {
		prev = rec.Cutoff
	}
	keepFrom := int64(math.MinInt64)
	if keep := e.Keep(); keep > 0 {
		keepFrom = logic.DayOf(cutoff - keep.Milliseconds())
	} else if ret := r.cfg.Retention[stream]; ret > 0 {
		keepFrom = logic.DayOf(time.Now().Add(-ret).UnixMilli())
	}
	// The dates that received events in [prev, cutoff), then every file
	// of those dates: a touched (key, day) is written whole.
	changed := map[string]bool{}
	for _, f := range m.Files {
		if f.MaxArrival >= prev && f.MinArrival < cutoff && f.MaxTime >= keepFrom {
			changed[f.Date] = true
		}
	}
	var files []lake.FileInfo
	for _, f := range m.Files {
		if changed[f.Date] {
			files = append(files, f)
		}
	}
	t0 := time.Now()
	log = log.With("entity", e.Name, "cutoff", logic.FormatTime(cutoff), "since", logic.FormatTime(prev), "dates", len(changed), "files", len(files))
	log.Info("entity materialisation started")
	keys, rows := int64(0), int64(0)
	if len(files) > 0 {
		if keys, rows, err = r.writeEntityDays(ctx, log, e, files, prev, cutoff, keepFrom); err != nil {
			return err
		}
	}
	if err := st.SetEntityMat(ctx, e, speedstore.EntityMat{Cutoff: cutoff, Prev: prev, Keys: keys, At: time.Now().UTC()}); err != nil {
		return err
	}
	log.Info("entity materialised", "keys", keys, "events", rows, "ms", time.Since(t0).Milliseconds())
	return nil
}

// writeEntityDays runs the materialisation's query and writes its keys.
func (r *Runner) writeEntityDays(ctx context.Context, log *slog.Logger, e *logic.Entity, files []lake.FileInfo, prev, cutoff, keepFrom int64) (int64, int64, error) {
	fkeys := make([]string, len(files))
	for i, f := range files {
		fkeys[i] = f.Key
	}
	paths, release, err := r.lk.Local(ctx, fkeys)
	if err != nil {
		return 0, 0, fmt.Errorf("lake files: %w", err)
	}
	defer release()
	db, err := openDuckDB(ctx, r.cfg.Threads, r.cfg.Memory)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	src := entitySourceSQL(e, paths, fmt.Sprintf("_arrival < %d AND _time >= %d", cutoff, keepFrom))
	q := "WITH src AS (" + src + ") SELECT * FROM src"
	if prev > 0 {
		q = "WITH src AS (" + src + "), touched AS (SELECT DISTINCT k, d FROM src WHERE _arrival >= " + strconv.FormatInt(prev, 10) +
			") SELECT src.* FROM src SEMI JOIN touched ON src.k = touched.k AND src.d = touched.d"
	}
	q += " ORDER BY k"
	var (
		batch    []speedstore.EntityDays
		cur      *speedstore.EntityDays
		keys     int64
		rows     int64
		lastLog  = time.Now()
		flushErr error
	)
	flush := func(force bool) {
		if flushErr != nil || len(batch) == 0 || !force && len(batch) < 500 {
			return
		}
		flushErr = r.cfg.Entities.WriteEntityDays(ctx, e, cutoff, keepFrom, batch)
		keys += int64(len(batch))
		batch = batch[:0]
		if time.Since(lastLog) > entityProgress {
			lastLog = time.Now()
			log.Info("entity materialisation progress", "keys", keys, "events", rows)
		}
	}
	err = scanEntityEvents(ctx, conn, e, q, func(key string, ev *logic.EntityEvent) error {
		if cur == nil || cur.Key != key {
			flush(false)
			if flushErr != nil {
				return flushErr
			}
			batch = append(batch, speedstore.EntityDays{Key: key, Days: map[int64][]byte{}})
			cur = &batch[len(batch)-1]
		}
		d := logic.DayOf(ev.Time)
		cur.Days[d] = e.AppendEvent(cur.Days[d], ev)
		rows++
		return nil
	})
	if err != nil {
		return keys, rows, err
	}
	flush(true)
	return keys, rows, flushErr
}

// entitySourceSQL is the relation of an entity's events in lake files:
// columns k (the key, as text), d (the event day, unix ms), _time,
// _arrival, _part, _seq, _idx, then the entity's fields; rows with a key
// and matching cond.
func entitySourceSQL(e *logic.Entity, paths []string, cond string) string {
	var b strings.Builder
	key := quoteIdent(e.Stream.Fields[e.Stream.FieldIndex(e.Key)].Name)
	fmt.Fprintf(&b, "SELECT CAST(%s AS VARCHAR) AS k, (_time // %d) * %d AS d, _time, _arrival, _part, _seq, _idx", key, logic.DayMs, logic.DayMs)
	for _, f := range e.Fields() {
		b.WriteString(", " + quoteIdent(f))
	}
	fmt.Fprintf(&b, " FROM (%s) AS l WHERE %s IS NOT NULL AND %s", sourceSQL(e.Stream, paths), key, cond)
	return b.String()
}

// scanEntityEvents runs q (columns as entitySourceSQL's) and calls f with
// each row's key and event (valid during the call).
func scanEntityEvents(ctx context.Context, conn *sql.Conn, e *logic.Entity, q string, f func(string, *logic.EntityEvent) error) error {
	rs, err := conn.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rs.Close()
	types := e.FieldTypes()
	nf := len(types)
	vals := make([]any, 7+nf)
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	ev := logic.EntityEvent{Values: make([]logic.Value, nf)}
	for rs.Next() {
		if err := rs.Scan(ptrs...); err != nil {
			return err
		}
		key, _ := vals[0].(string)
		var ok [5]bool
		ev.Time, ok[0] = vals[2].(int64)
		ev.Arrival, ok[1] = vals[3].(int64)
		var part, idx int32
		var seq int64
		part, ok[2] = vals[4].(int32)
		seq, ok[3] = vals[5].(int64)
		idx, ok[4] = vals[6].(int32)
		if ok != [5]bool{true, true, true, true, true} {
			return fmt.Errorf("entity %s: unexpected system columns %T %T %T %T %T", e.Name, vals[2], vals[3], vals[4], vals[5], vals[6])
		}
		ev.Part, ev.Seq, ev.Idx = int(part), uint64(seq), int(idx)
		for i, t := range types {
			v, err := fieldValue(vals[7+i], t)
			if err != nil {
				return fmt.Errorf("entity %s field %s: %w", e.Name, e.Fields()[i], err)
			}
			ev.Values[i] = v
		}
		if err := f(key, &ev); err != nil {
			return err
		}
	}
	return rs.Err()
}

// fieldValue converts a value scanned from DuckDB into the Value of a
// field of type t (nil: null).
func fieldValue(x any, t logic.FieldType) (logic.Value, error) {
	if x == nil {
		return logic.Value{}, nil
	}
	v, err := distinctValue(x)
	if err != nil {
		return v, err
	}
	switch t {
	case logic.TypeFloat:
		if v.Kind == logic.TypeInt {
			v = logic.Value{Kind: logic.TypeFloat, F: float64(v.I)}
		}
	case logic.TypeTime:
		v.Kind = logic.TypeTime
	case logic.TypeBool:
		v.Kind = logic.TypeBool
	}
	return v, nil
}

// EntityHistory reads entities' events from the lake with DuckDB, for
// as_of instants older than Redis keeps (speedstore.EntityHistory). It
// opens its DuckDB at the first read and keeps it until Close. Safe for
// concurrent use.
type EntityHistory struct {
	Lake    RunLake
	Threads int

	once sync.Once
	db   *sql.DB
	err  error
}

// Close closes the DuckDB.
func (h *EntityHistory) Close() error {
	if h.db != nil {
		return h.db.Close()
	}
	return nil
}

// EntityEvents implements speedstore.EntityHistory.
func (h *EntityHistory) EntityEvents(ctx context.Context, e *logic.Entity, keys []string, from, to, asOf int64) (map[string][]logic.EntityEvent, bool, error) {
	h.once.Do(func() { h.db, h.err = openDuckDB(context.Background(), h.Threads, "") })
	if h.err != nil {
		return nil, false, h.err
	}
	m, err := h.Lake.Manifest(ctx, e.Stream.Name)
	if err != nil {
		return nil, false, err
	}
	covered := m.CoveredUntil(e.Stream.Partitions) > asOf
	var fkeys []string
	for _, f := range m.Files {
		if f.MaxTime >= from && f.MinTime < to && f.MinArrival <= asOf {
			fkeys = append(fkeys, f.Key)
		}
	}
	out := map[string][]logic.EntityEvent{}
	if len(fkeys) == 0 || len(keys) == 0 {
		return out, covered, nil
	}
	paths, release, err := h.Lake.Local(ctx, fkeys)
	if err != nil {
		return nil, false, err
	}
	defer release()
	conn, err := h.db.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	defer conn.Close()
	lits := make([]string, len(keys))
	for i, k := range keys {
		lits[i] = quoteString(k)
	}
	cond := fmt.Sprintf("_time >= %d AND _time < %d AND _arrival <= %d", max(from, logic.MinTimeMs), to, asOf)
	q := "SELECT * FROM (" + entitySourceSQL(e, paths, cond) + ") WHERE k IN (" + strings.Join(lits, ", ") + ")"
	err = scanEntityEvents(ctx, conn, e, q, func(key string, ev *logic.EntityEvent) error {
		c := *ev
		c.Values = slices.Clone(ev.Values)
		out[key] = append(out[key], c)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, covered, nil
}

// entityJoiner tells where the speed layer's state of an entity starts
// in each partition (-1: not joined yet). *speedstore.Store satisfies it.
type entityJoiner interface {
	EntityJoins(ctx context.Context, e *logic.Entity) ([]int64, error)
}

// entitiesWhole reports whether every entity's materialisation reaches
// where its speed state starts in every partition (an entity answers
// then); without a way to tell, whether every entity has one.
func (r *Runner) entitiesWhole(ctx context.Context) bool {
	for _, e := range r.cat.Entities {
		rec, found, err := r.cfg.Entities.EntityMat(ctx, e)
		if err != nil || !found {
			return false
		}
		j, ok := r.cfg.Entities.(entityJoiner)
		if !ok {
			continue
		}
		joins, err := j.EntityJoins(ctx, e)
		if err != nil {
			return false
		}
		for _, at := range joins {
			if at < 0 || at > rec.Cutoff {
				return false
			}
		}
	}
	return true
}

// RebuildEntities materialises the entities until each is whole (its
// batch part reaches where the speed layer's part starts: a new or
// changed entity, or one whose Redis state was lost), every
// entityRebuildPause, while ctx lasts; each pass runs under the run lock
// like a run.
func (r *Runner) RebuildEntities(ctx context.Context) {
	if r.cfg.Entities == nil || len(r.cat.Entities) == 0 {
		return
	}
	log := r.logger.With("component", "entities")
	for ctx.Err() == nil && !r.entitiesWhole(ctx) {
		r.mu.Lock()
		if unlock, err := r.lock.Lock(); err == nil {
			r.materialiseEntities(ctx, log)
			unlock()
		}
		r.mu.Unlock()
		if r.entitiesWhole(ctx) {
			log.Info("entities whole")
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(entityRebuildPause):
		}
	}
}

// entityRebuildPause is the pause between RebuildEntities' passes (the
// lake's coverage moves on with time).
const entityRebuildPause = 5 * time.Second
