package brokertest_test

import (
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// TestForcedClose closes a connection from the server side (rabbitmqctl
// close_connection, as an operator or the management UI would) while a
// call, a consumer and a publisher confirmation wait on it.
func TestForcedClose(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	// Through a proxy, so that the pending work can be made to stay pending:
	// once the client-to-server direction is cut, the server never sees the
	// requests, but its connection.close still reaches the client.
	proxy := startProxy(t, node.Addr())
	name := uniqueName(t)
	conn := dial(t, amqp.Config{Addrs: []string{proxy.Listen}, ConnectionName: name})
	ctx := ctxFor(t, time.Minute)

	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true, AutoDelete: true})
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, NoAck: true})
	require.NoError(t, err)
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("before")})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(ctx))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "before", string(d.Body))

	blackhole(t, proxy, "upstream")
	callErr := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q.Queue, Passive: true})
		callErr <- err
	}()
	nextErr := make(chan error, 1)
	go func() {
		_, err := cons.Next(ctx)
		nextErr <- err
	}()
	pending, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("unconfirmed")})
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // let the call go out and wait
	select {
	case err := <-callErr:
		t.Fatalf("queue.declare returned before the close: %v", err)
	case err := <-nextErr:
		t.Fatalf("Next returned before the close: %v", err)
	case <-pending.Done():
		t.Fatal("the confirmation resolved before the close")
	default:
	}

	const reason = "brokertest: closed by the operator"
	require.NoError(t, node.CloseConnection(name, reason))
	elapsed := within(t, conn.Done(), 10*time.Second, "conn.Done after close_connection")
	t.Logf("connection ended %v after close_connection returned: %v", elapsed, conn.Err())

	err = conn.Err()
	var amqpErr *amqp.Error
	require.ErrorAs(t, err, &amqpErr)
	require.Equal(t, amqp.CodeConnectionForced, amqpErr.Code)
	require.True(t, amqpErr.Server, "sent by the server")
	require.True(t, amqpErr.Connection, "a connection error")
	require.Contains(t, amqpErr.Reason, "CONNECTION_FORCED")
	require.Contains(t, amqpErr.Reason, reason)
	require.ErrorIs(t, err, amqp.ErrConnectionForced)
	require.True(t, amqp.Recoverable(err), "a forced close may be retried on a new connection")
	require.False(t, conn.IsAlive())

	// Everything that was waiting ends with the cause.
	wantClosed := func(what string, err error) {
		t.Helper()
		require.ErrorIs(t, err, amqp.ErrClosed, what)
		require.ErrorIs(t, err, amqp.ErrConnectionForced, what)
	}
	for what, errc := range map[string]chan error{"pending queue.declare": callErr, "Consumer.Next": nextErr} {
		select {
		case err := <-errc:
			wantClosed(what, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waiting 5 s after the connection ended", what)
		}
	}
	wantClosed("Confirmation.Wait", pending.Wait(ctx))
	within(t, ch.Done(), time.Second, "channel Done")
	wantClosed("Channel.Err", ch.Err())
	within(t, cons.Done(), time.Second, "consumer Done")
	wantClosed("Consumer.Err", cons.Err())

	// New work fails at once with the same cause.
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	wantClosed("call after the close", err)
	_, err = conn.Channel(ctx)
	wantClosed("Channel after the close", err)
	after, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue})
	wantClosed("Publish after the close", err)
	wantClosed("Confirmation of a publish after the close", after.Wait(ctx))
	require.NoError(t, conn.Close(ctx), "Close after the server closed returns nil")
}
