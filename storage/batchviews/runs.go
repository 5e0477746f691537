package batchviews

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/braid-data/braid/storage/objstore"
)

func runKey(id string) string { return runPrefix + id + ".json" }

// SaveRun writes (or replaces) a run record, and removes the oldest
// records beyond keep-runs.
func (s *Store) SaveRun(r Run) error {
	if !validID(r.ID) {
		return fmt.Errorf("batchviews: bad run id %q", r.ID)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("batchviews: encode run: %w", err)
	}
	ctx := context.Background()
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if err := s.obj.Put(ctx, runKey(r.ID), bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("batchviews: save run %s: %w", r.ID, err)
	}
	s.mu.Lock()
	if r.Status == StatusRunning {
		delete(s.runs, r.ID)
	} else {
		s.runs[r.ID] = r
	}
	s.mu.Unlock()
	ids, err := s.ids(ctx, runPrefix)
	if err != nil {
		return err
	}
	for i := 0; i+s.keepRuns < len(ids); i++ {
		if ids[i] == r.ID {
			continue
		}
		_ = s.obj.Delete(ctx, runKey(ids[i]))
		s.mu.Lock()
		delete(s.runs, ids[i])
		s.mu.Unlock()
	}
	return nil
}

// Runs returns every stored run, newest first.
func (s *Store) Runs() ([]Run, error) {
	ids, err := s.ids(context.Background(), runPrefix)
	if err != nil {
		return nil, err
	}
	runs := make([]Run, len(ids))
	found := make([]bool, len(ids))
	if err := parallel(context.Background(), len(ids), func(i int) error {
		var err error
		runs[i], found[i], err = s.Run(ids[i])
		return err
	}); err != nil {
		return nil, err
	}
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
	}
	s.mu.Lock()
	for id := range s.runs {
		if !listed[id] {
			delete(s.runs, id) // removed by another handle
		}
	}
	s.mu.Unlock()
	out := make([]Run, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		if found[i] {
			out = append(out, runs[i])
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Started.After(out[j].Started) })
	return out, nil
}

// Run returns one run record. A finished record is final (only records of
// running runs are replaced): it is read once.
func (s *Store) Run(id string) (Run, bool, error) {
	var r Run
	if !validID(id) {
		return r, false, nil
	}
	s.mu.Lock()
	r, ok := s.runs[id]
	s.mu.Unlock()
	if ok {
		return r, true, nil
	}
	b, err := s.obj.Get(context.Background(), runKey(id))
	if errors.Is(err, objstore.ErrNotFound) || errors.Is(err, objstore.ErrInvalidKey) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("batchviews: read run %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("batchviews: decode run %s: %w", id, err)
	}
	if r.Status != StatusRunning {
		s.mu.Lock()
		s.runs[id] = r
		s.mu.Unlock()
	}
	return r, true, nil
}
