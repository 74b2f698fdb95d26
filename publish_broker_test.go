package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestPublishImmediateRefusedLocally(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	conf, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Immediate: true, Body: []byte("now")})
	require.ErrorIs(t, err, amqp.ErrImmediateUnsupported)
	require.NotNil(t, conf, "never nil")
	require.ErrorIs(t, conf.Wait(testCtx(t)), amqp.ErrImmediateUnsupported)

	// Nothing was sent: the connection and channel are fine and the queue empty.
	require.Zero(t, readyCount(t, ch, q))
	require.NoError(t, conn.Err())
	require.True(t, conn.IsAlive())
}

func TestPublishConsumeAck(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.Qos(testCtx(t), amqp.BasicQos{PrefetchCount: 10}))
	q := tempQueue(t, ch, nil)
	for i := range 20 {
		_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte{byte(i)}})
		require.NoError(t, err)
	}
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	require.NotEmpty(t, cons.Tag(), "server-chosen tag")
	for i := range 20 {
		d, err := cons.Next(testCtx(t))
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, d.Body, "in order")
		require.Equal(t, q, d.RoutingKey)
		require.Equal(t, cons.Tag(), d.ConsumerTag)
		require.NoError(t, d.Ack(amqp.AckOptions{}))
		require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrAlreadySettled, "a second ack is a local error")
	}
	require.NoError(t, cons.Cancel(testCtx(t)))
	_, err = cons.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrConsumerCancelled)
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, err, "the channel survived the double acks")
	require.Zero(t, ok.MessageCount)
}
