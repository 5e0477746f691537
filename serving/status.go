package serving

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
)

// Status is the answer of GET /v1/status (the Status schema of
// openapi.json). A part this process cannot read is reported in place
// (StatusPart); the answer is 200 as long as the server runs.
//
// The fields of every type here are in the order of their JSON names, so
// that the answer lists its keys in alphabetical order.
type Status struct {
	Batch   StatusPart[StatusBatch] `json:"batch"`
	Streams map[string]StatusStream `json:"streams"`
	Time    string                  `json:"time"`     // RFC 3339, UTC
	UptimeS int64                   `json:"uptime_s"` // seconds since the server started
	Views   map[string]StatusView   `json:"views"`
}

// StatusStream is a stream's status. Accepted, rejected, dead letters,
// too-late records, blocked and review events are what the log holds, the
// same in every process: events stored in the clean log (each once), dead
// letters, too-late records, events the rules held back at ingest. A count that could not be read is null, with its error beside
// it; without a log, the dead letters and too-late records are absent.
// Log, Speed and Archive add up the stream's partitions; Partitions has
// each (with one partition, its figures are the stream's).
type StatusStream struct {
	Accepted         *uint64                   `json:"accepted"`
	AcceptedError    *string                   `json:"accepted_error,omitempty"`
	Archive          StatusPart[StatusArchive] `json:"archive"`
	Blocked          Optional[uint64]          `json:"blocked,omitzero"` // events blocked by rules at ingest
	BlockedError     *string                   `json:"blocked_error,omitempty"`
	DeadLetters      Optional[uint64]          `json:"dead_letters,omitzero"`
	DeadLettersError *string                   `json:"dead_letters_error,omitempty"`
	Late             Optional[uint64]          `json:"late,omitzero"`
	LateError        *string                   `json:"late_error,omitempty"`
	Log              StatusPart[StatusLog]     `json:"log"`
	OwnersError      *string                   `json:"owners_error,omitempty"` // why the partitions' owners could not be read (present only then)
	Partitions       []StatusPartition         `json:"partitions"`
	Rejected         *uint64                   `json:"rejected"` // the dead letters held
	RejectedError    *string                   `json:"rejected_error,omitempty"`
	Review           Optional[uint64]          `json:"review,omitzero"` // events kept for review by rules at ingest (also in accepted)
	ReviewError      *string                   `json:"review_error,omitempty"`
	Speed            StatusPart[StatusSpeed]   `json:"speed"`
}

// StatusLog is a stream's clean log, in log records, over its
// partitions: the sums of their first and last sequences and of the
// records they hold, and the time of the latest record.
type StatusLog struct {
	FirstSeq uint64  `json:"first_seq"`
	LastSeq  uint64  `json:"last_seq"`  // records ever stored
	LastTime *string `json:"last_time"` // RFC 3339 with nanoseconds, UTC; null when the log is empty
	Msgs     uint64  `json:"msgs"`
}

// StatusSpeed is the speed layer's position on a stream, over its
// partitions.
type StatusSpeed struct {
	Lag          *uint64 `json:"lag"`            // log records not yet folded (null without a log)
	MaxEventTime *string `json:"max_event_time"` // largest event time seen in any partition (null: none)
	Seq          uint64  `json:"seq"`            // log records folded: the sum of the partitions' positions
	Watermark    *string `json:"watermark"`      // the partitions' watermark (logic.StreamMark) minus the allowed lateness (null: none)
}

// StatusArchive is the archiver's checkpoint on a stream, over its
// partitions.
type StatusArchive struct {
	CoveredUntil *string `json:"covered_until"` // every record of every partition that arrived before it is in the lake (null: none)
	Lag          *uint64 `json:"lag"`           // log records not yet in the lake (null without a log)
	Seq          uint64  `json:"seq"`           // log records in the lake: the sum of the partitions' checkpoints
}

// StatusPartition is one partition of a stream: the end of its log, the
// speed layer's position on it and the process holding it, and the
// archiver's checkpoint. A figure that could not be read is null (the
// stream's part says why).
type StatusPartition struct {
	Archive      StatusPart[StatusPartitionArchive] `json:"archive"`
	Lag          *uint64                            `json:"lag"`            // log records not yet folded (null: the log or the position could not be read)
	LastSeq      *uint64                            `json:"last_seq"`       // the partition's last log record (null: the log could not be read)
	MaxEventTime *string                            `json:"max_event_time"` // largest event time folded (null: none)
	Owner        *string                            `json:"owner"`          // the speed process holding the partition (null: none, or unknown)
	Partition    int                                `json:"partition"`
	Position     *uint64                            `json:"position"`  // the last log record folded (null: no position)
	Watermark    *string                            `json:"watermark"` // max_event_time minus the allowed lateness (null: none)
}

// StatusPartitionArchive is the archiver's checkpoint on one partition.
type StatusPartitionArchive struct {
	CoveredUntil *string `json:"covered_until"` // every record of the partition that arrived before it is in the lake (null: none)
	Lag          *uint64 `json:"lag"`           // log records not yet in the lake (null: the log could not be read)
	Owner        *string `json:"owner"`         // the archive process holding the partition (null: none, or unknown)
	Position     uint64  `json:"position"`      // the last log record in the lake
}

// StatusBatch is the current batch view version and the last run.
type StatusBatch struct {
	Created      *time.Time         `json:"created"` // null: no version yet
	Cutoffs      map[string]*string `json:"cutoffs"` // per view of the catalog (null: no cutoff)
	LastRun      *batchviews.Run    `json:"last_run"`
	LastRunError *string            `json:"last_run_error,omitempty"`
	Version      *string            `json:"version"`
}

// StatusView is a view's status.
type StatusView struct {
	BatchCutoff *string          `json:"batch_cutoff"` // the cutoff of the current version when it holds this definition
	Definition  string           `json:"definition"`
	FreshnessMs *int64           `json:"freshness_ms"` // how old the newest data behind its answers may be (query.Freshness); null: unknown
	Progress    float64          `json:"progress"`     // 0..1, 1 when ready
	SpeedCost   *StatusSpeedCost `json:"speed_cost"`   // what its speed state costs in Redis, as last measured; null: unknown
	State       string           `json:"state"`        // ready | rebuilding
	Stream      string           `json:"stream"`
	Tier        string           `json:"tier"` // live | batch
}

// StatusSpeedCost is what a view's speed state costs in Redis, as last
// measured (at most once per defaults.SpeedCostEvery).
type StatusSpeedCost struct {
	Bytes      int64  `json:"bytes"` // memory of its keys (MEMORY USAGE)
	Cells      int64  `json:"cells"` // speed cells: (arrival epoch, window, group)
	Exact      bool   `json:"exact"` // false: scaled up from a sample of its keys
	Keys       int64  `json:"keys"`
	MeasuredAt string `json:"measured_at"` // RFC 3339, UTC
}

// The status of a part that could not be read.
const (
	partError   = "error"       // reading it failed: Error says why
	unavailable = "unavailable" // this process has no such component
)

// StatusPart is a part of the status: its values (OK), or, when they
// could not be read, {"status": "error", "error": "..."}, or, when this
// process has no such component, {"status": "unavailable"}.
type StatusPart[T any] struct {
	OK     *T
	Status string // partError or unavailable, when OK is nil
	Error  string // with partError
}

func partOK[T any](v T) StatusPart[T] { return StatusPart[T]{OK: &v} }

func partFailed[T any](err error) StatusPart[T] {
	return StatusPart[T]{Status: partError, Error: err.Error()}
}

func partUnavailable[T any]() StatusPart[T] { return StatusPart[T]{Status: unavailable} }

// MarshalJSON writes the values, or the status of a part that could not
// be read.
func (p StatusPart[T]) MarshalJSON() ([]byte, error) {
	switch {
	case p.OK != nil:
		return json.Marshal(p.OK)
	case p.Status == partError:
		return json.Marshal(struct {
			Error  string `json:"error"`
			Status string `json:"status"`
		}{p.Error, p.Status})
	}
	return json.Marshal(struct {
		Status string `json:"status"`
	}{p.Status})
}

// Optional is a field that is absent (Set false, with omitzero), null
// (Value nil) or a value.
type Optional[T any] struct {
	Set   bool
	Value *T
}

func optional[T any](v T) Optional[T] { return Optional[T]{Set: true, Value: &v} }

// IsZero makes an unset Optional absent under omitzero.
func (o Optional[T]) IsZero() bool { return !o.Set }

// MarshalJSON writes the value, or null.
func (o Optional[T]) MarshalJSON() ([]byte, error) { return json.Marshal(o.Value) }

func ptr[T any](v T) *T { return &v }

// timePtr is a unix ms time in RFC 3339, nil for none (0 or less).
func timePtr(ms int64) *string {
	if ms <= 0 {
		return nil
	}
	return ptr(logic.FormatTime(ms))
}

// status reads every part of the status at now.
func (s *Server) status(ctx context.Context, now time.Time) Status {
	cat := s.opts.Catalog
	out := Status{Streams: map[string]StatusStream{}, Views: map[string]StatusView{},
		Time: now.UTC().Format(time.RFC3339Nano), UptimeS: int64(time.Since(s.started).Seconds())}
	maxEvent := map[string]int64{}              // speed layer's largest event time per stream
	positions := map[string]query.StreamSpeed{} // the speed layer's positions
	ends := map[string][]uint64{}               // the partitions' last log records
	var ver *batchviews.Version
	out.Batch, ver = s.batchStatus() // before the positions: a view's freshness is then an upper bound
	for _, name := range cat.StreamOrder {
		st := s.streamStatus(ctx, name, cat.Streams[name], maxEvent, positions, ends)
		out.Streams[name] = st
	}
	var measured map[string]measuredCost
	if s.costs != nil {
		measured = s.costs.get(ctx)
	}
	for _, vn := range cat.ViewOrder {
		v := cat.Views[vn]
		var cutoff int64
		if ver != nil && ver.Views[vn].Definition == v.Definition() {
			cutoff = ver.Views[vn].Cutoff
		}
		vo := StatusView{Stream: v.Stream.Name, Definition: v.Definition(), BatchCutoff: timePtr(cutoff), Tier: v.Tier.String()}
		pos := positions[v.Stream.Name]
		vs := s.engine.ViewState(v, ver, pos)
		if vs.Ready {
			vo.State, vo.Progress = "ready", 1.0
		} else {
			vo.State, vo.Progress = "rebuilding", vs.Progress
		}
		if ms, ok := query.Freshness(v, vs, pos, ends[v.Stream.Name], now.UnixMilli()); ok {
			vo.FreshnessMs = &ms
		}
		if c, ok := measured[vn]; ok {
			vo.SpeedCost = &StatusSpeedCost{Bytes: c.Bytes, Cells: c.Cells, Exact: c.Exact, Keys: c.Keys, MeasuredAt: c.At.UTC().Format(time.RFC3339Nano)}
		}
		out.Views[vn] = vo
	}
	return out
}

// streamStatus reads a stream's counts, and its partitions' logs, speed
// positions, archive checkpoints and owners; it notes the speed position
// in positions, its largest event time in maxEvent, its partitions' last
// log records in logEnds. A stream without live views has no speed part
// (unavailable): the speed layer keeps no state of it.
func (s *Server) streamStatus(ctx context.Context, name string, st *logic.Stream, maxEvent map[string]int64, positions map[string]query.StreamSpeed, logEnds map[string][]uint64) StatusStream {
	nparts := st.Partitions
	out := StatusStream{Partitions: make([]StatusPartition, nparts)}
	for p := range out.Partitions {
		out.Partitions[p].Partition = p
	}
	var ends []uint64 // each partition's last log record; nil: unknown
	if l := s.opts.Log; l != nil {
		if n, err := l.EventCount(ctx, name); err == nil {
			out.Accepted = &n
		} else {
			out.AcceptedError = ptr(err.Error())
		}
		if n, err := l.DeadLetterCount(ctx, name); err == nil {
			out.Rejected, out.DeadLetters = &n, optional(n)
		} else {
			out.DeadLetters = Optional[uint64]{Set: true}
			out.RejectedError, out.DeadLettersError = ptr(err.Error()), ptr(err.Error())
		}
		if n, err := l.LateCount(ctx, name); err == nil {
			out.Late = optional(n)
		} else {
			out.Late = Optional[uint64]{Set: true}
			out.LateError = ptr(err.Error())
		}
		out.Blocked, out.BlockedError = decidedCount(ctx, l, name, logic.Block)
		out.Review, out.ReviewError = decidedCount(ctx, l, name, logic.Review)
		if lg, e, err := readLog(ctx, l, name, nparts); err == nil {
			ends, logEnds[name] = e, e
			out.Log = partOK(lg)
			for p, last := range ends {
				out.Partitions[p].LastSeq = ptr(last)
			}
		} else {
			out.Log = partFailed[StatusLog](err)
		}
	} else {
		out.Log = partUnavailable[StatusLog]()
	}
	if len(s.opts.Catalog.SpeedViewsOf(name)) > 0 {
		out.Speed = s.speedStatus(ctx, name, st, ends, out.Partitions, maxEvent, positions)
	} else {
		out.Speed = partUnavailable[StatusSpeed]()
	}
	out.Archive = s.archiveStatus(ctx, name, ends, out.Partitions)
	if o := s.opts.Owners; o != nil {
		var errs []error
		if owners, err := o.PartitionOwners(ctx, RoleSpeed, name, nparts); err == nil {
			for p := range min(nparts, len(owners)) {
				out.Partitions[p].Owner = owner(owners[p])
			}
		} else {
			errs = append(errs, err)
		}
		if s.opts.Archive != nil {
			if owners, err := o.PartitionOwners(ctx, RoleArchive, name, nparts); err == nil {
				for p := range min(nparts, len(owners)) {
					if a := out.Partitions[p].Archive.OK; a != nil {
						a.Owner = owner(owners[p])
					}
				}
			} else {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			out.OwnersError = ptr(err.Error())
		}
	}
	return out
}

// decidedCount reads the number of a stream's events held back with
// outcome o: the count, or null and why.
func decidedCount(ctx context.Context, l EventLog, name string, o logic.Outcome) (Optional[uint64], *string) {
	n, err := l.DecidedCount(ctx, name, o)
	if err != nil {
		return Optional[uint64]{Set: true}, ptr(err.Error())
	}
	return optional(n), nil
}

// readLog reads the state of each of a stream's n partitions' logs: their
// sum, and each one's last record.
func readLog(ctx context.Context, l EventLog, name string, n int) (StatusLog, []uint64, error) {
	var lg StatusLog
	var last time.Time
	ends := make([]uint64, n)
	for p := range n {
		info, err := l.Info(ctx, name, p)
		if err != nil {
			return StatusLog{}, nil, err
		}
		lg.FirstSeq += info.FirstSeq
		lg.LastSeq += info.LastSeq
		lg.Msgs += info.Msgs
		if info.LastTime.After(last) {
			last = info.LastTime
		}
		ends[p] = info.LastSeq
	}
	if !last.IsZero() {
		lg.LastTime = ptr(last.UTC().Format(time.RFC3339Nano))
	}
	return lg, ends, nil
}

// speedStatus reads the speed layer's position on a stream into its
// partitions' entries (parts) and their sum; ends are the partitions'
// last log records (nil: unknown).
func (s *Server) speedStatus(ctx context.Context, name string, st *logic.Stream, ends []uint64, parts []StatusPartition, maxEvent map[string]int64, positions map[string]query.StreamSpeed) StatusPart[StatusSpeed] {
	ss := s.opts.SpeedStatus
	if ss == nil {
		return partUnavailable[StatusSpeed]()
	}
	pos, err := ss.StreamStatus(ctx, name)
	if err != nil {
		return partFailed[StatusSpeed](err)
	}
	positions[name] = pos
	sp := StatusSpeed{Seq: pos.Seq, Watermark: timePtr(logic.Watermark{Max: pos.Watermark}.At(st.AllowedLateness))}
	var total uint64
	for p := range parts {
		var ps query.PartSpeed
		if p < len(pos.Parts) {
			ps = pos.Parts[p]
		}
		e := &parts[p]
		if ps.Found {
			maxEvent[name] = max(maxEvent[name], ps.Watermark)
			e.Position, e.MaxEventTime = ptr(ps.Seq), timePtr(ps.Watermark)
			e.Watermark = timePtr(logic.Watermark{Max: ps.Watermark}.At(st.AllowedLateness))
		}
		if ends != nil {
			e.Lag = ptr(lag(ends[p], ps.Seq))
			total += *e.Lag
		}
	}
	sp.MaxEventTime = timePtr(maxEvent[name])
	if ends != nil {
		sp.Lag = ptr(total)
	}
	return partOK(sp)
}

// archiveStatus reads the archiver's checkpoint of each partition of a
// stream into their entries (parts) and their sum; ends are the
// partitions' last log records (nil: unknown).
func (s *Server) archiveStatus(ctx context.Context, name string, ends []uint64, parts []StatusPartition) StatusPart[StatusArchive] {
	as := s.opts.Archive
	if as == nil {
		for p := range parts {
			parts[p].Archive = partUnavailable[StatusPartitionArchive]()
		}
		return partUnavailable[StatusArchive]()
	}
	var ar StatusArchive
	var firstErr error
	var total uint64
	covered := int64(-1) // the smallest CoveredUntil
	for p := range parts {
		cp, err := as.ArchiveCheckpoint(ctx, name, p)
		if err != nil {
			parts[p].Archive = partFailed[StatusPartitionArchive](err)
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		pa := StatusPartitionArchive{Position: cp.Seq, CoveredUntil: timePtr(cp.CoveredUntil)}
		if ends != nil {
			pa.Lag = ptr(lag(ends[p], cp.Seq))
			total += *pa.Lag
		}
		parts[p].Archive = partOK(pa)
		ar.Seq += cp.Seq
		if covered < 0 || cp.CoveredUntil < covered {
			covered = cp.CoveredUntil
		}
	}
	if firstErr != nil {
		return partFailed[StatusArchive](firstErr)
	}
	ar.CoveredUntil = timePtr(covered)
	if ends != nil {
		ar.Lag = ptr(total)
	}
	return partOK(ar)
}

// owner is a process id, nil for none.
func owner(id string) *string {
	if id == "" {
		return nil
	}
	return &id
}

// batchStatus reads the current batch version (nil when there is none or
// it cannot be read) and the last run.
func (s *Server) batchStatus() (StatusPart[StatusBatch], *batchviews.Version) {
	vs := s.opts.Views
	if vs == nil {
		return partUnavailable[StatusBatch](), nil
	}
	ver, err := vs.Current()
	if err != nil {
		return partFailed[StatusBatch](err), nil
	}
	b := StatusBatch{Cutoffs: map[string]*string{}}
	for _, vn := range s.opts.Catalog.ViewOrder {
		b.Cutoffs[vn] = nil
	}
	if ver != nil {
		b.Version, b.Created = &ver.ID, &ver.Created
		for vn, vv := range ver.Views {
			if _, ok := b.Cutoffs[vn]; ok {
				b.Cutoffs[vn] = timePtr(vv.Cutoff)
			}
		}
	}
	if runs, err := vs.Runs(); err != nil {
		b.LastRunError = ptr(err.Error())
	} else if len(runs) > 0 {
		b.LastRun = &runs[0]
	}
	return partOK(b), ver
}

func lag(last, at uint64) uint64 {
	if last > at {
		return last - at
	}
	return 0
}
