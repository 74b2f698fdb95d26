package brokertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// TestConnectionBlocked raises a memory alarm on the shared node and checks
// connection.blocked / connection.unblocked handling end to end.
//
// RabbitMQ (3.10) sends connection.blocked to a connection only when it
// publishes during the alarm, and from then on reads nothing more from that
// connection's socket until the alarm clears. So on a blocked connection
// every call, not just a publish, waits: a queue.declare ends with its ctx
// (its late reply is read and dropped after the unblock). Connections that
// do not publish are not blocked and keep working.
func TestConnectionBlocked(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: uniqueName(t)})
	other := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: uniqueName(t) + "-other"})
	events := make(chan amqp.Blocking, 16)
	conn.OnBlocked(func(b amqp.Blocking) { events <- b })

	ctx := ctxFor(t, time.Minute)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: uniqueName(t), AutoDelete: true})
	require.NoError(t, err)
	otherCh := openChannel(t, other)
	t.Cleanup(func() { otherCh.QueueDelete(context.Background(), amqp.QueueDelete{Queue: q.Queue}) })

	// The alarm is global to the node: always lift it, even if the test fails.
	t.Cleanup(func() {
		if _, err := node.Ctl("set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("lifting the memory alarm: %v", err)
		}
	})
	_, err = node.Ctl("set_vm_memory_high_watermark", "0.0000001")
	require.NoError(t, err)

	// Publish until the server blocks the connection: the memory monitor
	// raises the alarm asynchronously, and the server only tells a
	// connection that publishes.
	var sent []*amqp.Confirmation
	var blocked amqp.Blocking
	deadline := time.After(15 * time.Second)
publishing:
	for {
		conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("before the block")})
		require.NoError(t, err)
		sent = append(sent, conf)
		select {
		case blocked = <-events:
			break publishing
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("no connection.blocked within 15 s of the memory alarm")
		}
	}
	t.Logf("connection.blocked after %d publishes", len(sent))
	require.Equal(t, amqp.Blocking{Active: true, Reason: "low on memory"}, blocked)
	isBlocked, reason := conn.Blocked()
	require.True(t, isBlocked, "Blocked() while the server blocks the connection")
	require.Equal(t, "low on memory", reason)

	// A publish waits for the unblock, bounded by its ctx, with a typed error.
	pubCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	start := time.Now()
	conf, err := ch.Publish(pubCtx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("never sent")})
	elapsed := time.Since(start)
	cancel()
	t.Logf("publish on the blocked connection returned after %v: %v", elapsed, err)
	require.ErrorIs(t, err, amqp.ErrBlocked)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var blockedErr *amqp.BlockedError
	require.ErrorAs(t, err, &blockedErr)
	require.Equal(t, "low on memory", blockedErr.Reason)
	require.GreaterOrEqual(t, elapsed, 1900*time.Millisecond, "the publish waited for the unblock")
	require.Less(t, elapsed, 4*time.Second, "the publish ended with its ctx")
	require.NotNil(t, conf, "Publish never returns a nil Confirmation")
	require.ErrorIs(t, conf.Wait(ctx), amqp.ErrBlocked, "the confirmation of a publish never sent carries its error")

	// The server reads nothing from a blocked connection, so an RPC times
	// out with its ctx too. (Documented behaviour, asserted so a change in
	// the server or the client shows up here.)
	rpcCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = ch.QueueDeclare(rpcCtx, amqp.QueueDeclare{Queue: q.Queue, Passive: true})
	cancel()
	t.Logf("queue.declare on the blocked connection: %v", err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, conn.Err(), "a blocked connection is not broken")

	// A connection that never published is not blocked.
	_, err = otherCh.QueueDeclare(ctxFor(t, 5*time.Second), amqp.QueueDeclare{Queue: q.Queue, Passive: true})
	require.NoError(t, err, "RPC on a connection that does not publish, during the alarm")

	_, err = node.Ctl("set_vm_memory_high_watermark", "0.4")
	require.NoError(t, err)
	select {
	case b := <-events:
		require.Equal(t, amqp.Blocking{Active: false}, b)
	case <-time.After(15 * time.Second):
		t.Fatal("no connection.unblocked within 15 s of lifting the alarm")
	}
	isBlocked, _ = conn.Blocked()
	require.False(t, isBlocked)

	// Everything queued before the block reaches the server now.
	for i, c := range sent {
		require.NoError(t, c.Wait(ctx), "confirmation of publish %d", i+1)
	}
	conf, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("after the block")})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(ctx))
	// The channel is consistent: the timed-out declare's late reply was
	// dropped, not handed to this call.
	ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q.Queue, Passive: true})
	require.NoError(t, err)
	require.Equal(t, q.Queue, ok.Queue)
	require.Equal(t, uint32(len(sent)+1), ok.MessageCount, "every confirmed message is in the queue")
	require.NoError(t, conn.Err())
}
