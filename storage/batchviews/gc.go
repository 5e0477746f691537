package batchviews

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// orphanGrace is how long the clean-up leaves an object no version refers
// to when it cannot tell that its writer is done: a version record with no
// pointer (a publish in progress) and a part of a run without a record,
// counted from the time in the id (NewID).
const orphanGrace = time.Hour

// keepPointers is how many of the newest pointers are kept (at least
// keep-versions).
const keepPointers = 10

// young says whether an id of NewID was made less than orphanGrace ago.
func young(id string, now time.Time) bool {
	age, ok := idAge(id, now)
	return ok && age < orphanGrace
}

// gc removes what the newest versions no longer need, after a publish:
//   - version records: the newest keep-versions pointers' are kept; the
//     others a pointer names go; a record no pointer names (a store written
//     before pointers, a publish in progress or one that died) is kept
//     while it is younger than orphanGrace, or as one of the newest to make
//     up keep-versions when fewer pointers exist;
//   - pointers beyond the newest max(keepPointers, keep-versions), oldest
//     first;
//   - parts no remaining version refers to, once their run's record is
//     finished (a run in progress, on any host, may still publish them), or
//     without a record once the run's id is older than orphanGrace;
//     whole-view files of the earlier layout no remaining version refers to.
//
// Nothing is removed while a remaining version record cannot be read.
func (s *Store) gc(ctx context.Context) error {
	now := time.Now()
	ptrObjs, err := s.obj.List(ctx, pointerPrefix)
	if err != nil {
		return fmt.Errorf("list pointers: %w", err)
	}
	var gens []uint64
	for _, o := range ptrObjs {
		if g, ok := parsePointerKey(o.Key); ok {
			gens = append(gens, g)
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i] > gens[j] }) // newest first
	named := map[string]bool{}                                         // version ids some pointer names
	keep := map[string]bool{}
	var errs []error
	for i, g := range gens {
		id, err := s.pointerID(ctx, g)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		named[id] = true
		if i < s.keep {
			keep[id] = true
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	ids, err := s.ids(ctx, versionPrefix)
	if err != nil {
		return err
	}
	remaining := map[string]bool{}
	for i := len(ids) - 1; i >= 0; i-- { // newest first
		id := ids[i]
		switch {
		case keep[id]:
		case named[id]:
			continue // superseded
		case young(id, now):
		case len(keep) < s.keep:
			keep[id] = true // a store with fewer pointers than versions to keep
		default:
			continue
		}
		remaining[id] = true
	}
	for _, id := range ids {
		if remaining[id] {
			continue
		}
		if err := s.obj.Delete(ctx, versionKey(id)); err != nil {
			errs = append(errs, err)
			remaining[id] = true // still there: what it refers to stays
			continue
		}
		s.mu.Lock()
		delete(s.versions, id)
		s.mu.Unlock()
	}
	if extra := len(gens) - max(keepPointers, s.keep); extra > 0 {
		for i := len(gens) - 1; i >= len(gens)-extra; i-- { // oldest first
			if err := s.obj.Delete(ctx, pointerKey(gens[i])); err != nil {
				errs = append(errs, err)
				break
			}
		}
		s.mu.Lock()
		for g := range s.gens {
			if g <= gens[len(gens)-extra] {
				delete(s.gens, g)
			}
		}
		s.mu.Unlock()
	}

	used := map[string]bool{}
	for id := range remaining {
		v, err := s.Version(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, vv := range v.Views {
			used[vv.File] = true
			for _, p := range vv.Parts {
				used[p.Key] = true
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	parts, err := s.obj.List(ctx, partPrefix)
	if err != nil {
		return fmt.Errorf("list parts: %w", err)
	}
	done := map[string]bool{} // run -> its parts may go
	for _, o := range parts {
		if used[o.Key] || !strings.HasSuffix(o.Key, ".parquet") {
			continue
		}
		run := runOfPart(o.Key)
		d, ok := done[run]
		if !ok {
			r, found, err := s.Run(run)
			switch {
			case err != nil:
				errs = append(errs, err)
				d = false
			case found:
				d = r.Status != StatusRunning
			default:
				d = !young(run, now)
			}
			done[run] = d
		}
		if d {
			if err := s.obj.Delete(ctx, o.Key); err != nil {
				errs = append(errs, err)
			}
			s.forget(o.Key)
		}
	}
	legacy, err := s.obj.List(ctx, legacyPrefix)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list view files: %w", err))...)
	}
	for _, o := range legacy {
		if used[o.Key] {
			continue
		}
		if err := s.obj.Delete(ctx, o.Key); err != nil {
			errs = append(errs, err)
		}
		s.forget(o.Key)
	}
	return errors.Join(errs...)
}
