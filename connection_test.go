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

func TestDialAndNegotiate(t *testing.T) {
	conn := dialBroker(t)
	require.True(t, conn.IsAlive())
	require.NoError(t, conn.Err())
	require.Equal(t, uint32(131072), conn.FrameMax(), "RabbitMQ's frame_max")
	require.Equal(t, uint16(2047), conn.ChannelMax(), "RabbitMQ's channel_max")
	require.Equal(t, 60*time.Second, conn.Heartbeat(), "RabbitMQ proposes 60 s and the client accepts it by default")
	require.Equal(t, "RabbitMQ", conn.ServerProperties()["product"])
}

func TestDialWrongPassword(t *testing.T) {
	needBroker(t)
	start := time.Now()
	_, err := amqp.Dial(testCtx(t), "amqp://guest:wrong-secret@127.0.0.1:5672/")
	require.Error(t, err)
	require.ErrorIs(t, err, amqp.ErrAccessRefused, "403 ACCESS_REFUSED from the server")
	var amqpErr *amqp.Error
	require.ErrorAs(t, err, &amqpErr)
	require.True(t, amqpErr.Server)
	require.Contains(t, amqpErr.Reason, "ACCESS_REFUSED")
	require.NotContains(t, err.Error(), "wrong-secret", "errors never contain the password")
	require.Less(t, time.Since(start), 10*time.Second)
}

func TestDialUnknownVhost(t *testing.T) {
	needBroker(t)
	_, err := amqp.Dial(testCtx(t), "amqp://guest:guest@127.0.0.1:5672/no-such-vhost")
	require.ErrorIs(t, err, amqp.ErrNotAllowed, "530 NOT_ALLOWED")
	var amqpErr *amqp.Error
	require.ErrorAs(t, err, &amqpErr)
	require.True(t, amqpErr.Connection)
	require.Contains(t, amqpErr.Reason, "no-such-vhost")
}

func TestDialClusterAddressesInOrder(t *testing.T) {
	needBroker(t)
	// The first address refuses connections; the second is the broker.
	closed := reservedClosedPort(t)
	cfg, err := amqp.ParseURL("amqp://guest:guest@" + closed + ",127.0.0.1:5672/")
	require.NoError(t, err)
	conn, err := amqp.DialConfig(testCtx(t), cfg)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5672", conn.Addr())
	require.NoError(t, conn.Close(testCtx(t)))

	// When every address fails, the error names each one.
	other := reservedClosedPort(t)
	cfg, err = amqp.ParseURL("amqp://guest:guest@" + closed + "," + other + "/")
	require.NoError(t, err)
	_, err = amqp.DialConfig(testCtx(t), cfg)
	var dialErr *amqp.DialError
	require.ErrorAs(t, err, &dialErr)
	require.Len(t, dialErr.Failures, 2)
	require.Contains(t, err.Error(), closed)
	require.Contains(t, err.Error(), other)
}

func TestCloseIsGracefulAndIdempotent(t *testing.T) {
	needBroker(t)
	conn, err := amqp.Dial(testCtx(t), brokerURL())
	require.NoError(t, err)
	ch := openChannel(t, conn)
	require.NoError(t, conn.Close(testCtx(t)))
	require.NoError(t, conn.Close(testCtx(t)), "second Close")
	<-conn.Done()
	require.ErrorIs(t, conn.Err(), amqp.ErrClosed)
	require.False(t, conn.IsAlive())
	<-ch.Done()
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Exclusive: true})
	require.ErrorIs(t, err, amqp.ErrClosed)
}

func TestChannelRecoversAfterNotFound(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.Qos(testCtx(t), amqp.BasicQos{PrefetchCount: 7}))

	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
	var amqpErr *amqp.Error
	require.ErrorAs(t, err, &amqpErr)
	require.True(t, amqpErr.Server)
	require.False(t, amqpErr.Connection)
	require.Equal(t, "queue.declare", amqpErr.Method())
	require.False(t, amqp.Recoverable(err), "a missing queue stays missing")

	// The same *Channel works for the next call, with qos re-applied.
	q := tempQueue(t, ch, nil)
	require.NoError(t, ch.Err())
	for i := range 10 {
		_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte{byte(i)}})
		require.NoError(t, err)
	}
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	// With prefetch 7 re-applied, the server stops at 7 unacked deliveries.
	require.Eventually(t, func() bool {
		ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
		return err == nil && ok.MessageCount == 3
	}, 5*time.Second, 50*time.Millisecond, "prefetch 7 re-applied after reopen leaves 3 of 10 in the queue")
	require.NoError(t, cons.Cancel(testCtx(t)))
}

func TestChannelRecoversAfterPreconditionFailed(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	name := uniqueName("redeclare")
	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: name, AutoDelete: true, Arguments: amqp.Table{"x-max-length": int32(10)}})
	require.NoError(t, err)
	t.Cleanup(func() { ch.QueueDelete(context.Background(), amqp.QueueDelete{Queue: name}) })

	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: name, AutoDelete: true, Arguments: amqp.Table{"x-max-length": int32(20)}})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed)

	// Confirm mode was re-applied: a publish is acked.
	conf, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: name, Body: []byte("after reopen")})
	require.NoError(t, err)
	require.True(t, conf.Requested())
	require.NoError(t, conf.Wait(testCtx(t)))
	require.Equal(t, uint64(1), conf.DeliveryTag(), "sequence numbers restart on the reopened channel")
}

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

func TestChannelNumbersAreReused(t *testing.T) {
	conn := dialBroker(t)
	ch1 := openChannel(t, conn)
	id := ch1.ID()
	require.NoError(t, ch1.Close(testCtx(t)))
	require.NoError(t, ch1.Close(testCtx(t)), "idempotent")
	seen := map[uint16]bool{}
	for range int(conn.ChannelMax()) + 1 {
		ch := openChannel(t, conn)
		seen[ch.ID()] = true
		require.NoError(t, ch.Close(testCtx(t)))
		if seen[id] {
			return
		}
	}
	t.Fatalf("channel number %d was never reused", id)
}
