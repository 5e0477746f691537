package speed_test

import (
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
)

// The storage implementations satisfy the interfaces the speed layer
// declares.
var (
	_ speed.EventLog[*eventlog.Consumer] = (*eventlog.Log)(nil)
	_ speed.Consumer                     = (*eventlog.Consumer)(nil)
	_ speed.Store                        = (*speedstore.Store)(nil)
	_ speed.Shares                       = (*leases.Group)(nil)
)
