package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// The exchange type constants name types the broker has: a misspelt one
// would be refused (503 COMMAND_INVALID), closing the connection.
func TestExchangeTypeConstantsAreTheBrokers(t *testing.T) {
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	for _, kind := range []string{amqp.ExchangeDirect, amqp.ExchangeFanout, amqp.ExchangeTopic, amqp.ExchangeHeaders} {
		name := uniqueName("kind-" + kind)
		require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: name, Type: kind, AutoDelete: true}), kind)
		// The broker has it now.
		require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: name, Type: kind, Passive: true}), kind)
		require.NoError(t, ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: name}))
	}
	require.NoError(t, conn.Err())
}

// Persistent and Transient travel as the delivery modes 2 and 1.
func TestDeliveryModeConstants(t *testing.T) {
	ctx := testCtx(t)
	ch := openChannel(t, dialBroker(t))
	q := tempQueue(t, ch, nil)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)
	for _, mode := range []uint8{amqp.Persistent, amqp.Transient} {
		_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q, Properties: amqp.Properties{DeliveryMode: mode}})
		require.NoError(t, err)
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, mode, d.DeliveryMode)
	}
	require.Equal(t, uint8(2), amqp.Persistent)
	require.Equal(t, uint8(1), amqp.Transient)
}
