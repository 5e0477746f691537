package speed

import (
	"slices"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
)

// entitiesOf lists a stream's entities, by name.
func (l *Layer) entitiesOf(stream string) []*logic.Entity {
	var out []*logic.Entity
	for _, e := range l.cat.Entities {
		if e.Stream.Name == stream {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *logic.Entity) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// entityJoin is where a loop that starts from pos folds an entity new to
// the partition completely: from the arrival epoch after the one of the
// last record pos holds (records of that epoch before pos were never
// folded for it); without a last arrival, from the epoch after now's.
// Later is always safe: the batch layer covers what is before, and the
// entity answers once a materialisation reaches it.
func entityJoin(pos speedstore.Position, epoch time.Duration) int64 {
	la := pos.LastArrival
	if la <= 0 {
		la = time.Now().UnixMilli()
	}
	return logic.EpochOf(la, epoch) + epoch.Milliseconds()
}
