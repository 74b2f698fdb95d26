package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestBlockedConnection(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	events := make(chan amqp.Blocking, 2)
	conn.OnBlocked(func(b amqp.Blocking) { events <- b })
	ch := openFakeChannel(t, conn, sc)

	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionBlocked{Reason: "low on memory"}))
	require.Equal(t, amqp.Blocking{Active: true, Reason: "low on memory"}, <-events)
	blocked, reason := conn.Blocked()
	require.True(t, blocked)
	require.Equal(t, "low on memory", reason)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.ErrorIs(t, err, amqp.ErrBlocked)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var be *amqp.BlockedError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "low on memory", be.Reason)

	// A publish waiting when the block lifts goes through.
	done := make(chan error, 1)
	go func() {
		_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q", Body: []byte("after")})
		done <- err
	}()
	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionUnblocked{}))
	require.Equal(t, amqp.Blocking{Active: false}, <-events)
	require.NoError(t, <-done)
	p := amqptest.ExpectPublish(t, sc)
	require.Equal(t, "after", string(p.Body), "the blocked publish with the expired ctx was never sent")
}

func TestServerFlowPausesPublishing(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	flows := make(chan bool, 2)
	ch.OnFlow(func(active bool) { flows <- active })

	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.ChannelFlow{Active: false}))
	_, ok := amqptest.Expect[*amqp.ChannelFlowOk](t, sc)
	require.False(t, ok.Active, "the client acknowledges the pause")
	require.False(t, <-flows)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("paused")})
	require.ErrorIs(t, err, context.DeadlineExceeded, "publishing waits while the server paused the channel")

	done := make(chan error, 1)
	go func() {
		_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q", Body: []byte("resumed")})
		done <- err
	}()
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.ChannelFlow{Active: true}))
	_, ok = amqptest.Expect[*amqp.ChannelFlowOk](t, sc)
	require.True(t, ok.Active)
	require.True(t, <-flows)
	require.NoError(t, <-done)
	require.Equal(t, "resumed", string(amqptest.ExpectPublish(t, sc).Body), "the timed-out publish was never sent")
}
