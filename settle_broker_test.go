package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestRejectRequeueOrDeadLetter(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	dlq := tempQueue(t, ch, nil)
	q := tempQueue(t, ch, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	publishN(t, ch, q, 1)

	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.False(t, d.Redelivered)
	require.NoError(t, d.Reject(amqp.RejectOptions{Requeue: true}))
	require.ErrorIs(t, d.Reject(amqp.RejectOptions{}), amqp.ErrAlreadySettled)

	d, err = ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err, "requeued")
	require.True(t, d.Redelivered)
	require.NoError(t, d.Reject(amqp.RejectOptions{Requeue: false}))

	dead := getEventually(t, ch, dlq)
	require.Equal(t, "0", string(dead.Body), "dead-lettered")
	_, err = ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.ErrorIs(t, err, amqp.ErrEmpty)
}

func TestNackMultiple(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 4)
	ds := getN(t, ch, q, 4)

	require.NoError(t, ds[2].Nack(amqp.NackOptions{Multiple: true, Requeue: true}))
	for _, d := range ds[:3] {
		require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrAlreadySettled, "tag %d", d.DeliveryTag)
	}
	readyEventually(t, ch, q, 3)
	require.NoError(t, ds[3].Ack(amqp.AckOptions{}), "the one after is untouched")
	require.NoError(t, ch.Err())
}

func TestAckMultiple(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 3)
	ds := getN(t, ch, q, 3)

	require.NoError(t, ds[1].Ack(amqp.AckOptions{Multiple: true}))
	require.ErrorIs(t, ds[0].Ack(amqp.AckOptions{}), amqp.ErrAlreadySettled, "acked by the multiple ack")
	require.ErrorIs(t, ds[1].Nack(amqp.NackOptions{}), amqp.ErrAlreadySettled)

	// Only the third is still unacknowledged: recover hands back just that one.
	require.NoError(t, ch.Recover(testCtx(t), amqp.BasicRecover{Requeue: true}))
	readyEventually(t, ch, q, 1)
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.Equal(t, "2", string(d.Body))
	require.True(t, d.Redelivered)
	require.NoError(t, d.Ack(amqp.AckOptions{}))
	require.NoError(t, ch.Err())
}

func TestNoAckDeliveryCannotBeAcked(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("x")})
	require.NoError(t, err)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)
	d, err := cons.Next(testCtx(t))
	require.NoError(t, err)
	require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrNoAckDelivery)
	require.ErrorIs(t, d.Reject(amqp.RejectOptions{Requeue: true}), amqp.ErrNoAckDelivery)
	tempQueue(t, ch, nil) // the channel is still open
	require.NoError(t, ch.Err())
}

func TestStaleDeliveryAfterChannelReopen(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("x")})
	require.NoError(t, err)
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
	require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrStaleDelivery)
	// The server requeued it when the channel closed: it comes again, redelivered.
	d2, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.True(t, d2.Redelivered)
	require.NoError(t, d2.Ack(amqp.AckOptions{}))
}
