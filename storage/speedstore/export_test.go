package speedstore

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// CommitRebuildUnfenced writes a view's delta into its cells with no
// position at all: what a rebuild that died before it began could leave.
func (s *Store) CommitRebuildUnfenced(ctx context.Context, d *logic.Delta) error {
	var a argBuf
	s.appendDelta(&a, d.View.Stream.Name, 0, d)
	return unfencedScript.Run(ctx, s.rdb, []string{s.posKey(d.View.Stream.Name, 0)}, a.args()...).Err()
}

var unfencedScript = redis.NewScript(`
local function join(_) return true end
local i = 1
` + sectionLua + `
return 1
`)

// SetReadBounds sets Read's round-trip bounds (readHashes, readFields,
// scanCount, mgetKeys) until the test ends.
func SetReadBounds(t interface{ Cleanup(func()) }, hashes, fields, scan, mget int) {
	old := [4]int{readHashes, readFields, scanCount, mgetKeys}
	readHashes, readFields, scanCount, mgetKeys = hashes, fields, scan, mget
	t.Cleanup(func() { readHashes, readFields, scanCount, mgetKeys = old[0], old[1], old[2], old[3] })
}
