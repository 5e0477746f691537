package ingest_test

import (
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
)

// The event log is the use case's log.
var _ ingest.Log = (*eventlog.Log)(nil)

// testCatalog is a catalog of the given streams.
func testCatalog(streams ...*logic.Stream) *config.Catalog {
	cat := &config.Catalog{Streams: map[string]*logic.Stream{}, Views: map[string]*logic.View{}}
	for _, s := range streams {
		cat.Streams[s.Name] = s
		cat.StreamOrder = append(cat.StreamOrder, s.Name)
	}
	return cat
}
