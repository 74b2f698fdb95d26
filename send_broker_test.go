package amqp_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestConcurrentCallsOnOneChannel(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	const n = 50
	names := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("conc") + "-" + string(rune('a'+i%26)), Exclusive: true})
			names[i] = ok.Queue
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	seen := map[string]bool{}
	for _, name := range names {
		require.False(t, seen[name], "each caller got its own reply")
		seen[name] = true
	}
}

// TestCancelledCallsLeaveChannelConsistent cancels thousands of calls at
// random points, then checks every later call gets its own reply.
func TestCancelledCallsLeaveChannelConsistent(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	const calls = 3000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	cancelled := 0
	var mu sync.Mutex
	for i := range calls {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithCancel(context.Background())
			if i%3 != 0 {
				time.AfterFunc(time.Duration(rand.IntN(300))*time.Microsecond, cancel)
			}
			defer cancel()
			ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Passive: true})
			switch {
			case err == nil:
				if ok.Queue != q {
					t.Errorf("reply for another call: %+v", ok)
				}
			case errors.Is(err, context.Canceled):
				mu.Lock()
				cancelled++
				mu.Unlock()
			default:
				t.Errorf("call %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of %d calls cancelled", cancelled, calls)
	require.Positive(t, cancelled)
	// The channel is consistent: purge replies carry purge results, declares carry declares.
	for range 20 {
		n, err := ch.QueuePurge(testCtx(t), amqp.QueuePurge{Queue: q})
		require.NoError(t, err)
		require.Equal(t, uint32(0), n)
		ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
		require.NoError(t, err)
		require.Equal(t, q, ok.Queue)
	}
}

func TestShortstrTooLongKeepsConnectionHealthy(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: strings.Repeat("q", 256)})
	require.ErrorIs(t, err, amqp.ErrShortstrTooLong)
	require.Contains(t, err.Error(), "queue.declare queue")
	_, err = ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: "x", Properties: amqp.Properties{Headers: amqp.Table{"bad": struct{}{}}}})
	require.ErrorIs(t, err, amqp.ErrUnsupportedType)
	// Nothing broken was sent: the channel still works.
	tempQueue(t, ch, nil)
	require.True(t, conn.IsAlive())
}
