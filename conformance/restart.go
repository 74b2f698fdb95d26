package conformance

import (
	"context"
	"sync"
)

// restartBarrier lets every check that needs a broker restart share one:
// each sets up what must survive, calls T.Restart, and waits there until
// every such check has arrived (or ended without arriving); then the broker
// restarts once and they all go on to look at what survived.
type restartBarrier struct {
	restart func(context.Context) error
	ctx     context.Context

	mu      sync.Mutex
	pending int          // checks that may still arrive
	waiting []chan error // the checks that have
}

// arrive waits for the shared restart and returns its outcome.
func (b *restartBarrier) arrive(ctx context.Context) error {
	done := make(chan error, 1)
	b.mu.Lock()
	b.waiting = append(b.waiting, done)
	b.pending--
	b.fireLocked()
	b.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leave tells the barrier that a check ended without arriving.
func (b *restartBarrier) leave() {
	b.mu.Lock()
	b.pending--
	b.fireLocked()
	b.mu.Unlock()
}

// fireLocked restarts the broker once nobody else may arrive.
func (b *restartBarrier) fireLocked() {
	if b.pending > 0 || len(b.waiting) == 0 {
		return
	}
	waiting := b.waiting
	b.waiting = nil
	go func() {
		err := b.restart(b.ctx)
		for _, w := range waiting {
			w <- err
		}
	}()
}
