package speed

import "errors"

// The ways a stream loop ends that Run tells apart (any other error is an
// outage: the loop starts again after a growing pause).
var (
	// errStateLost: the store has no position while the loop committed
	// one (Redis lost its data): the next loop rebuilds from the log.
	errStateLost = errors.New("speed: speed state lost")
	// errLeaseLost: another process took the writer lease: the next loop
	// stands by until it is free.
	errLeaseLost = errors.New("speed: writer lease lost")
)
