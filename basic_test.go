package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

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
