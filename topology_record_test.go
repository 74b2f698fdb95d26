package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// TestRecoveryForgetsCancelledAutoDeleteQueue checks that an auto-delete
// queue whose last consumer was cancelled (so the broker deleted it) is not
// declared again, while one that still has a consumer is.
func TestRecoveryForgetsCancelledAutoDeleteQueue(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	for _, q := range []string{"ad-cancelled", "ad-kept"} {
		_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, AutoDelete: true})
		require.NoError(t, err)
	}
	cancelled, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "ad-cancelled", ConsumerTag: "x"})
	require.NoError(t, err)
	_, err = ch.Consume(ctx, amqp.BasicConsume{Queue: "ad-kept", ConsumerTag: "y"})
	require.NoError(t, err)
	require.NoError(t, cancelled.Cancel(ctx))

	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	require.Equal(t, []string{
		`2 channel.open`,
		`2 queue.declare "ad-kept" exclusive=false`,
		`2 channel.close`,
		`1 channel.open`,
		`1 basic.consume ad-kept y`,
	}, b.methods(b.conn(t, 1)))
}
