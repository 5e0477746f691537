package main

import (
	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/storage/speedstore"
)

// entityReader is the process's reader of entity features (HTTP lookups
// and decision rules share it), over the queries' Redis client and, for
// as_of instants older than Redis keeps, the lake; nil without Redis or
// entities. Made once per layers.
func (a *app) entityReader(l *layers) *speedstore.EntityReader {
	if l.entities != nil || l.qstore == nil || len(a.cat.Entities) == 0 {
		return l.entities
	}
	r := &speedstore.EntityReader{Store: l.qstore, Entities: a.cat.Entities}
	if l.lake != nil {
		h := &batch.EntityHistory{Lake: l.lake, Threads: a.cfg.Batch.Threads}
		a.onClose(h.Close)
		r.History = h
	}
	l.entities = r
	return r
}
