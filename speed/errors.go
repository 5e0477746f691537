package speed

import "errors"

// errStateLost ends a stream loop whose store has no position while the
// loop committed one (Redis lost its data): the next loop rebuilds from
// the log. Run tells it apart from outages (any other error: the loop
// starts again after a growing pause).
var errStateLost = errors.New("speed: speed state lost")
