package amqp

import (
	"context"
	"sync/atomic"
)

// gate is a condition publishers wait on without taking a lock: open, or
// shut with a reason until it opens again (connection.blocked, channel.flow).
// Checking it is one atomic load, which keeps it off the publish path's costs.
type gate struct {
	shut atomic.Pointer[gateShut]
}

type gateShut struct {
	opened chan struct{} // closed when the gate opens
	reason string
}

// close shuts the gate; it reports false if it was shut already.
func (g *gate) close(reason string) bool {
	return g.shut.CompareAndSwap(nil, &gateShut{opened: make(chan struct{}), reason: reason})
}

// open opens the gate, releasing its waiters; it reports false if it was open.
func (g *gate) open() bool {
	s := g.shut.Swap(nil)
	if s != nil {
		close(s.opened)
	}
	return s != nil
}

// state reports whether the gate is shut, and why.
func (g *gate) state() (shut bool, reason string) {
	if s := g.shut.Load(); s != nil {
		return true, s.reason
	}
	return false, ""
}

// wait returns nil once the gate is open, or the shut state's reason with
// ctx's error if ctx ends first, or errDone if done closes first.
func (g *gate) wait(ctx context.Context, done <-chan struct{}) (reason string, err error) {
	for {
		s := g.shut.Load()
		if s == nil {
			return "", nil
		}
		select {
		case <-s.opened:
		case <-done:
			return s.reason, errGateDone
		case <-ctx.Done():
			return s.reason, ctx.Err()
		}
	}
}

// errGateDone reports that the owner of a gate ended while a caller waited.
var errGateDone = ErrClosed
