package amqp

import (
	"context"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// waitPendingCall returns the oldest pending call of ch once there is one.
func waitPendingCall(ch *Channel) *pendingCall {
	for {
		ch.mu.Lock()
		p := ch.calls.peek()
		ch.mu.Unlock()
		if p != nil {
			return p
		}
		runtime.Gosched()
	}
}

// A synchronous call reuses the entry (and reply channel) of the call
// before it, unless that call was abandoned: its late reply still lands in
// the abandoned entry, never in the next call's.
func TestCallReusesPendingCall(t *testing.T) {
	c := &Connection{done: make(chan struct{}), events: newEventQueue()}
	ch := newChannel(c, 1)
	ch.link.Store(&link{c: c, done: make(chan struct{}), w: newWriter(nil, nil)})
	declare := func(ctx context.Context, res chan<- string) {
		ok, err := callTyped[QueueDeclareOk](ctx, ch, &QueueDeclare{Queue: "q", Passive: true})
		if err != nil {
			res <- "error: " + err.Error()
			return
		}
		res <- ok.Queue
	}

	var first *pendingCall
	for i := range 3 {
		res := make(chan string, 1)
		go declare(t.Context(), res)
		p := waitPendingCall(ch)
		if i == 0 {
			first = p
		} else {
			require.Same(t, first, p, "call %d reuses the first call's entry", i)
		}
		require.NoError(t, ch.complete(&QueueDeclareOk{Queue: "q"}, nil))
		require.Equal(t, "q", <-res)
	}

	// Abandoned: its entry stays queued for the late reply and is not reused.
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan string, 1)
	go declare(ctx, res)
	require.Same(t, first, waitPendingCall(ch))
	cancel()
	require.Contains(t, <-res, "context canceled")

	res = make(chan string, 1)
	go declare(t.Context(), res)
	for {
		ch.mu.Lock()
		n := ch.calls.len()
		ch.mu.Unlock()
		if n == 2 {
			break
		}
		runtime.Gosched()
	}
	require.NoError(t, ch.complete(&QueueDeclareOk{Queue: "late"}, nil)) // the abandoned call's reply
	require.NotSame(t, first, waitPendingCall(ch))
	require.NoError(t, ch.complete(&QueueDeclareOk{Queue: "q2"}, nil))
	require.Equal(t, "q2", <-res)
}
