package amqp

import (
	"sync"
	"sync/atomic"
)

// eventQueue runs user callbacks (blocked, return, ack/nack listeners,
// OnCancel, OnError, OnFlow) in order on one goroutine of their own. The
// queue is unbounded so that pushing never blocks the reader and no event is
// ever dropped, however slow a callback is; the reader's own backpressure
// (bounded consumer buffers, prefetch, confirms per publish) bounds how much
// it can hold in practice.
//
// The goroutine starts with the first callback: a connection that never
// has one (most idle ones) does not pay for it.
type eventQueue struct {
	mu      sync.Mutex
	queue   []func()
	wake    chan struct{} // cap 1
	closed  bool
	started bool           // run was started; guarded by mu
	running sync.WaitGroup // run, once started: added to under mu before closed is set

	inCallback atomic.Bool // a callback is running: Close must not wait for run, which may be its caller
}

func newEventQueue() *eventQueue { return &eventQueue{wake: make(chan struct{}, 1)} }

// push queues fn. After close, fn is dropped: the connection has ended and
// its goroutines are gone.
func (q *eventQueue) push(fn func()) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.queue = append(q.queue, fn)
	if !q.started {
		q.started = true
		q.running.Add(1)
		go func() { defer q.running.Done(); q.run() }()
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// close makes run return once it has run everything queued so far.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) run() {
	var batch []func()
	for {
		q.mu.Lock()
		batch, q.queue = q.queue, batch[:0]
		closed := q.closed
		q.mu.Unlock()
		for i, fn := range batch {
			q.inCallback.Store(true)
			fn()
			q.inCallback.Store(false)
			batch[i] = nil
		}
		if len(batch) == 0 {
			if closed {
				return
			}
			<-q.wake
		}
	}
}
