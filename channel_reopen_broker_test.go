package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

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
