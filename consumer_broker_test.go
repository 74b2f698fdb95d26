package amqp_test

import (
	"context"
	"testing"
	"time"

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

func TestConsumerTagChosenByClient(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, ConsumerTag: "my-worker-1", NoAck: true})
	require.NoError(t, err)
	require.Equal(t, "my-worker-1", cons.Tag(), "the server echoes the client's tag")
	_, err = ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("x")})
	require.NoError(t, err)
	d, err := cons.Next(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, "my-worker-1", d.ConsumerTag)
	require.NoError(t, cons.Cancel(testCtx(t)))
}

func TestExclusiveConsumer(t *testing.T) {
	conn := dialBroker(t)
	ch1 := openChannel(t, conn)
	ch2 := openChannel(t, conn)

	// An exclusive consumer keeps others off the queue.
	q := tempQueue(t, ch1, nil)
	_, err := ch1.Consume(testCtx(t), amqp.BasicConsume{Queue: q, Exclusive: true})
	require.NoError(t, err)
	_, err = ch2.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.ErrorIs(t, err, amqp.ErrAccessRefused, "403: queue in exclusive use")
	var e *amqp.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "basic.consume", e.Method())
	require.False(t, e.Connection)

	// And cannot start while another consumer is there.
	q2 := tempQueue(t, ch1, nil)
	_, err = ch2.Consume(testCtx(t), amqp.BasicConsume{Queue: q2})
	require.NoError(t, err, "ch2 was reopened and works")
	_, err = ch1.Consume(testCtx(t), amqp.BasicConsume{Queue: q2, Exclusive: true})
	require.ErrorIs(t, err, amqp.ErrAccessRefused)
	require.NoError(t, ch1.Err())
	require.NoError(t, conn.Err())
}

func TestConsumeNoLocalAndPriorityAccepted(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)

	// RabbitMQ accepts no-local but ignores it: the channel's own messages still arrive.
	local, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoLocal: true, NoAck: true})
	require.NoError(t, err)
	_, err = ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("own")})
	require.NoError(t, err)
	d, err := local.Next(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, "own", string(d.Body))
	require.NoError(t, local.Cancel(testCtx(t)))

	// x-priority: a consumer with higher priority gets every message while it
	// has room (no prefetch limit here, so always).
	low, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)
	high, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoAck: true, Arguments: amqp.Table{"x-priority": int32(10)}})
	require.NoError(t, err)
	const n = 5
	for range n {
		_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("p")})
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range n { // all n reached high, so none reached low
		_, err := high.Next(ctx)
		require.NoError(t, err)
	}
	require.NoError(t, low.Cancel(testCtx(t)))
	require.NoError(t, high.Cancel(testCtx(t)))
}

func TestConsumeNoWaitRefused(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoWait: true})
	require.ErrorIs(t, err, amqp.ErrNoWaitConsume)
	require.Nil(t, cons)
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, err)
	require.Zero(t, ok.ConsumerCount, "nothing was sent")
}

func TestDeliveriesEndAfterCancel(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 3)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for d, err := range cons.Deliveries(ctx) {
		require.NoError(t, err, "a cancelled consumer ends the loop without an error")
		got = append(got, string(d.Body))
		if len(got) == 1 {
			require.NoError(t, cons.Cancel(ctx))
		}
	}
	require.NoError(t, ctx.Err(), "the loop ended by itself")
	require.NotEmpty(t, got)
	require.Equal(t, "0", got[0])
	require.ErrorIs(t, cons.Err(), amqp.ErrConsumerCancelled)
	require.NoError(t, ch.Err())
}

func TestNextHonoursContext(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = cons.Next(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second, "returns promptly")

	// The consumer is unaffected.
	require.NoError(t, cons.Err())
	_, err = ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("later")})
	require.NoError(t, err)
	d, err := cons.Next(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, "later", string(d.Body))
}

func TestConsumerEndsWithChannelError(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
	_, err = cons.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrNotFound, "the consumer ends with the channel's error")
	<-cons.Done()
}

func TestServerCancelNotification(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	admin := openChannel(t, conn)

	// Without OnCancel: the consumer ends with an error that says so.
	q1 := uniqueName("cancel1")
	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q1})
	require.NoError(t, err)
	c1, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q1})
	require.NoError(t, err)
	_, err = admin.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: q1})
	require.NoError(t, err)
	_, err = c1.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrCancelledByServer)

	// With OnCancel: the callback runs with the tag.
	q2 := uniqueName("cancel2")
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q2})
	require.NoError(t, err)
	cancelled := make(chan string, 1)
	c2, err := ch.ConsumeWith(testCtx(t), amqp.BasicConsume{Queue: q2, ConsumerTag: "tagged"},
		amqp.ConsumerOptions{OnCancel: func(tag string) { cancelled <- tag }})
	require.NoError(t, err)
	_, err = admin.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: q2})
	require.NoError(t, err)
	select {
	case tag := <-cancelled:
		require.Equal(t, "tagged", tag)
	case <-time.After(5 * time.Second):
		t.Fatal("OnCancel not called")
	}
	_, err = c2.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrConsumerCancelled)
	require.NoError(t, ch.Err(), "the channel stays open")
}
