package amqp_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestQosPrefetchCountHonoured(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 5)
	require.NoError(t, ch.Qos(testCtx(t), amqp.BasicQos{PrefetchCount: 2}))
	// A channel error in between: the reopened channel gets the qos again.
	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)

	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	var ds []*amqp.Delivery
	for range 2 {
		d, err := cons.Next(testCtx(t))
		require.NoError(t, err)
		ds = append(ds, d)
	}
	// Two are out unacknowledged, so the server holds the other three back.
	readyEventually(t, ch, q, 3)
	require.Zero(t, countWithin(cons, 100*time.Millisecond), "no third delivery")
	require.NoError(t, ds[0].Ack(amqp.AckOptions{}))
	d, err := cons.Next(testCtx(t))
	require.NoError(t, err, "one ack lets one more through")
	require.Equal(t, "2", string(d.Body))
	readyEventually(t, ch, q, 2)
	require.NoError(t, d.Ack(amqp.AckOptions{Multiple: true}))
	require.NoError(t, cons.Cancel(testCtx(t)))
}

func TestQosGlobal(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 3)
	// Global: the limit is shared by every consumer on the channel.
	require.NoError(t, ch.Qos(testCtx(t), amqp.BasicQos{PrefetchCount: 1, Global: true}))
	c1, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	c2, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	readyEventually(t, ch, q, 2)
	require.Equal(t, 1, countWithin(c1, 100*time.Millisecond)+countWithin(c2, 100*time.Millisecond),
		"one delivery out for the whole channel, not one per consumer")
	require.Equal(t, uint32(2), readyCount(t, ch, q))
	require.NoError(t, c1.Cancel(testCtx(t)))
	require.NoError(t, c2.Cancel(testCtx(t)))
}

func TestQosPrefetchSizeNotImplemented(t *testing.T) {
	// RabbitMQ 3.10 does not implement prefetch-size: it closes the whole
	// connection with 540 NOT_IMPLEMENTED (a hard error), not just the channel.
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	err := ch.Qos(testCtx(t), amqp.BasicQos{PrefetchSize: 4096, PrefetchCount: 1})
	require.ErrorIs(t, err, amqp.ErrNotImplemented)
	var e *amqp.Error
	require.ErrorAs(t, err, &e)
	require.True(t, e.Server)
	require.True(t, e.Connection, "540 is a connection error")
	require.Equal(t, "basic.qos", e.Method())
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open")
	}
	require.ErrorIs(t, conn.Err(), amqp.ErrNotImplemented)
	require.ErrorIs(t, ch.Err(), amqp.ErrClosed)
}

func TestRecoverRequeueRedelivers(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 1)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	first, err := cons.Next(testCtx(t))
	require.NoError(t, err)
	require.False(t, first.Redelivered)

	require.NoError(t, ch.Recover(testCtx(t), amqp.BasicRecover{Requeue: true}))
	again, err := cons.Next(testCtx(t))
	require.NoError(t, err)
	require.True(t, again.Redelivered)
	require.Equal(t, "0", string(again.Body))
	require.NotEqual(t, first.DeliveryTag, again.DeliveryTag)
	require.NoError(t, again.Ack(amqp.AckOptions{}))
	require.NoError(t, cons.Cancel(testCtx(t)))
	require.NoError(t, ch.Err())
}

// After basic.recover the server forgets the tags it handed out before, so
// acknowledging an earlier delivery must be a local error, as for a delivery
// from before a channel reopen — not a 406 that closes the channel.
func TestAckAfterRecoverIsLocalError(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 1)
	old, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.NoError(t, ch.Recover(testCtx(t), amqp.BasicRecover{Requeue: true}))

	err = old.Ack(amqp.AckOptions{})
	// Sent right behind the ack: a 406 caused by the ack fails it.
	_, perr := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, perr, "the channel stays open")
	require.ErrorIs(t, err, amqp.ErrStaleDelivery, "its tag died with basic.recover")
}

// The same holds for the asynchronous form, which has no reply to mark
// the point: a delivery received before it was sent is void after it.
func TestAckAfterRecoverAsyncIsLocalError(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 1)
	old, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.NoError(t, ch.RecoverAsync(testCtx(t), amqp.BasicRecoverAsync{Requeue: true}))
	readyEventually(t, ch, q, 1)

	err = old.Ack(amqp.AckOptions{})
	_, perr := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, perr, "the channel stays open")
	require.ErrorIs(t, err, amqp.ErrStaleDelivery, "its tag died with basic.recover-async")
}

func TestRecoverAsyncRequeues(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishN(t, ch, q, 1)
	_, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.Zero(t, readyCount(t, ch, q), "unacknowledged")

	require.NoError(t, ch.RecoverAsync(testCtx(t), amqp.BasicRecoverAsync{Requeue: true}))
	readyEventually(t, ch, q, 1)
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.NoError(t, err)
	require.True(t, d.Redelivered)
	require.NoError(t, ch.Err())
}

func TestGetEmpty(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	_, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.ErrorIs(t, err, amqp.ErrEmpty)
}

func TestAbandonedGetGivesMessageBack(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	for range 200 {
		_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("m")})
		require.NoError(t, err)
	}
	// Cancel many Gets at random points; none may leave a message unacked.
	got := 0
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(400))*time.Microsecond)
		d, err := ch.Get(ctx, amqp.BasicGet{Queue: q})
		cancel()
		if err == nil {
			require.NoError(t, d.Ack(amqp.AckOptions{}))
			got++
		}
	}
	// Every message is either acked (got) or back in the queue: none stays
	// unacked. (The last abandoned Get's message may be handed back just
	// after a first count is taken, hence the polling.)
	require.Eventually(t, func() bool {
		ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
		return err == nil && ok.MessageCount == uint32(200-got)
	}, 5*time.Second, 20*time.Millisecond, "%d acked; the rest must be ready again", got)
}
