package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

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
