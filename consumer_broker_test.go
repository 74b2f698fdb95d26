package amqp_test

import (
	"context"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// A range over Deliveries ends without an error when the application ended
// the consumer itself, whichever way it did, even from another goroutine
// while the loop waits.
func TestDeliveriesEndSilentlyWhenTheApplicationEndsThem(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(context.Context, *amqp.Connection, *amqp.Channel, *amqp.Consumer) error
	}{
		{"Consumer.Cancel", func(ctx context.Context, _ *amqp.Connection, _ *amqp.Channel, c *amqp.Consumer) error {
			return c.Cancel(ctx)
		}},
		{"Channel.Close", func(ctx context.Context, _ *amqp.Connection, ch *amqp.Channel, _ *amqp.Consumer) error {
			return ch.Close(ctx)
		}},
		{"Connection.Close", func(ctx context.Context, conn *amqp.Connection, _ *amqp.Channel, _ *amqp.Consumer) error {
			return conn.Close(ctx)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			conn := dialBroker(t)
			ch := openChannel(t, conn)
			q := tempQueue(t, ch, nil)
			publishN(t, ch, q, 2)
			cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q})
			require.NoError(t, err)

			var got []string
			for d, err := range cons.Deliveries(ctx) {
				require.NoError(t, err, "the application's own end yields no error")
				got = append(got, string(d.Body))
				require.NoError(t, d.Ack(amqp.AckOptions{}))
				if len(got) == 2 { // the loop now waits in Next while another goroutine ends it
					go func() { _ = tc.end(ctx, conn, ch, cons) }()
				}
			}
			require.NoError(t, ctx.Err(), "the loop ended by itself")
			require.Equal(t, []string{"0", "1"}, got)
			require.True(t, amqp.EndedByApplication(cons.Err()), "%v", cons.Err())
		})
	}
}

// An end that did not come from the application is yielded, once, and
// ends the loop: a channel error, and a server cancel without OnCancel.
func TestDeliveriesYieldAnEndFromElsewhere(t *testing.T) {
	t.Run("channel error", func(t *testing.T) {
		ctx := testCtx(t)
		ch := openChannel(t, dialBroker(t))
		q := tempQueue(t, ch, nil)
		cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q})
		require.NoError(t, err)
		_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
		require.ErrorIs(t, err, amqp.ErrNotFound)
		requireYieldsOnly(t, ctx, cons, amqp.ErrNotFound)
	})
	t.Run("server cancel", func(t *testing.T) {
		ctx := testCtx(t)
		ch := openChannel(t, dialBroker(t))
		q := tempQueue(t, ch, nil)
		cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q})
		require.NoError(t, err)
		_, err = ch.QueueDelete(ctx, amqp.QueueDelete{Queue: q})
		require.NoError(t, err)
		requireYieldsOnly(t, ctx, cons, amqp.ErrCancelledByServer)
	})
}

// requireYieldsOnly ranges over cons and checks that the loop yields one
// error, matching want, and nothing else.
func requireYieldsOnly(t *testing.T, ctx context.Context, cons *amqp.Consumer, want error) {
	t.Helper()
	var errs []error
	for d, err := range cons.Deliveries(ctx) {
		require.Nil(t, d)
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], want)
	require.False(t, amqp.EndedByApplication(errs[0]))
}
