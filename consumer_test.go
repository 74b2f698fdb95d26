package amqp_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// A connection the server closes is an end from elsewhere: a range over
// Deliveries yields it, although it matches ErrClosed like the
// application's own Close.
func TestDeliveriesYieldTheServersConnectionClose(t *testing.T) {
	cons, sc, _ := fakeConsumer(t, amqp.ConsumerOptions{})
	require.NoError(t, sc.CloseConnection(t.Context(), amqp.CodeConnectionForced, "CONNECTION_FORCED - broker shutdown", nil))
	var errs []error
	for _, err := range cons.Deliveries(t.Context()) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], amqp.ErrClosed)
	require.ErrorIs(t, errs[0], amqp.ErrConnectionForced)
	require.False(t, amqp.EndedByApplication(errs[0]))
}

func TestConsumerBufferLimitPausesReader(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	other := openFakeChannel(t, conn, sc)
	consumed := make(chan *amqp.Consumer, 1)
	go func() {
		c, err := ch.ConsumeWith(t.Context(), amqp.BasicConsume{Queue: "q", ConsumerTag: "c", NoAck: true},
			amqp.ConsumerOptions{BufferLimit: 5})
		require.NoError(t, err)
		consumed <- c
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: "c"}))
	cons := <-consumed

	// 20 deliveries, then a reply on another channel. The reader stops after
	// the 5th delivery fills the buffer, so the reply is not read yet.
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 20, amqp.Properties{}, []byte("m")))
	declared := make(chan error, 1)
	go func() {
		_, err := other.QueueDeclare(t.Context(), amqp.QueueDeclare{Queue: "x"})
		declared <- err
	}()
	amqptest.Expect[*amqp.QueueDeclare](t, sc)
	// net.Pipe has no socket buffer: the write completes only when the
	// paused reader reads again.
	sent := make(chan error, 1)
	go func() { sent <- sc.Send(t.Context(), other.ID(), &amqp.QueueDeclareOk{Queue: "x"}) }()
	select {
	case err := <-declared:
		t.Fatalf("the reader went past a full consumer buffer (declare returned %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	require.True(t, conn.IsAlive(), "the pause is ours: it does not count as server silence")

	// Draining the consumer lets the reader go on: every delivery arrives, in order.
	for i := range 20 {
		d, err := cons.Next(t.Context())
		require.NoError(t, err)
		require.Equal(t, uint64(i+1), d.DeliveryTag)
	}
	require.NoError(t, <-sent)
	require.NoError(t, <-declared)
}

func TestDeliveriesGoesOnAfterMalformedContent(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
	bad := poisonedHeaders["unknown type tag in a header table"].props
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, bad, []byte("1"))))
	require.NoError(t, sc.SendContent(ctx, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, amqp.Properties{}, []byte("2")))
	var bodies []string
	var errs int
	for d, err := range cons.Deliveries(ctx) {
		require.NotNil(t, d)
		if err != nil {
			require.ErrorIs(t, err, amqp.ErrMalformedContent)
			errs++
		}
		bodies = append(bodies, string(d.Body))
		if len(bodies) == 2 {
			break
		}
	}
	require.Equal(t, []string{"1", "2"}, bodies)
	require.Equal(t, 1, errs)
}

func TestRejectMalformedRejectsWithoutRequeue(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{RejectMalformed: true})
	bad := poisonedHeaders["flag word announcing more than the header holds"].props
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, bad, []byte("poison"))))
	require.NoError(t, sc.SendContent(ctx, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, amqp.Properties{}, []byte("good")))

	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "good", string(d.Body), "the malformed one is not handed out")
	_, rej := amqptest.Expect[*amqp.BasicReject](t, sc)
	require.Equal(t, amqp.BasicReject{DeliveryTag: 1, Requeue: false}, *rej)
	require.NoError(t, d.Ack(amqp.AckOptions{}))
	_, ack := amqptest.Expect[*amqp.BasicAck](t, sc)
	require.Equal(t, uint64(2), ack.DeliveryTag)
}

// Bug: two concurrent Next calls, two deliveries: one Next is never woken.
func TestConcurrentNextEachGetADelivery(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeFake(t, ch, sc, "c", true, 100)
	res := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := cons.Next(ctx)
			res <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // both wait
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 2, amqp.Properties{}, []byte("m")))
	require.NoError(t, <-res)
	require.NoError(t, <-res, "second Next missed its delivery")
}

func TestConcurrentNextAllWokenByTheConsumersEnd(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeFake(t, ch, sc, "c", true, 100)
	res := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := cons.Next(ctx)
			res <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicCancel{ConsumerTag: "c"}))
	require.ErrorIs(t, <-res, amqp.ErrCancelledByServer)
	require.ErrorIs(t, <-res, amqp.ErrCancelledByServer, "second Next not woken by the end")
}

// Bug: an abandoned consumer (Consume's ctx ended before consume-ok) is not
// marked cancelling, so deliveries before cancel-ok fill its buffer and the
// reader waits forever: the whole connection stalls.
func TestAbandonedConsumerDoesNotStallTheReader(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	other := openFakeChannel(t, conn, sc)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"}, amqp.ConsumerOptions{BufferLimit: 1})
		errc <- err
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	cancel()
	require.Error(t, <-errc)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: "c"}))
	// The server had these in flight before it reads the client's basic.cancel.
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 3, amqp.Properties{}, []byte("m")))
	amqptest.Expect[*amqp.BasicCancel](t, sc)
	go sc.Send(context.Background(), ch.ID(), &amqp.BasicCancelOk{ConsumerTag: "c"})
	declared := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := other.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "x"})
		declared <- err
	}()
	// The client hands the abandoned consumer's deliveries back (basic.reject
	// after cancel-ok), possibly before the declare: skip those.
	rejected := 0
	for {
		cmd, err := sc.ReadCommand(t.Context())
		require.NoError(t, err)
		if rej, ok := cmd.Method.(*amqp.BasicReject); ok {
			require.True(t, rej.Requeue)
			rejected++
			continue
		}
		require.IsType(t, &amqp.QueueDeclare{}, cmd.Method)
		break
	}
	go sc.Send(context.Background(), other.ID(), &amqp.QueueDeclareOk{Queue: "x"})
	require.NoError(t, <-declared, "reader stuck on the abandoned consumer's full buffer")
}

func TestConcurrentNextManyWaitersEachGetADelivery(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeFake(t, ch, sc, "c", true, 1000)
	for round := range 50 {
		const n = 8
		res := make(chan error, n)
		for range n {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, err := cons.Next(ctx)
				res <- err
			}()
		}
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", n, amqp.Properties{}, []byte("m")))
		for i := range n {
			if err := <-res; err != nil {
				t.Fatalf("round %d: waiter %d: %v (a delivery sat in the buffer while a Next waited)", round, i, err)
			}
		}
	}
}

// TestResubscribeAfterServerCancel checks ConsumerOptions.Resubscribe: a
// consumer the server cancels subscribes again once its queue exists.
func TestResubscribeAfterServerCancel(t *testing.T) {
	var queueGone atomic.Bool
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, _ int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.QueueDeclare); ok && m.Passive && queueGone.Load() {
			return true, c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue", m)
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, amqp.Config{Dial: b.srv.Dial, Recovery: &amqp.RecoveryConfig{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cancelled := make(chan string, 1)
	cons, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"},
		amqp.ConsumerOptions{Resubscribe: true, OnCancel: func(tag string) { cancelled <- tag }})
	require.NoError(t, err)

	queueGone.Store(true)
	sc := b.conn(t, 0)
	require.NoError(t, sc.Send(ctx, 1, &amqp.BasicCancel{ConsumerTag: "c", NoWait: true}))
	require.Equal(t, "c", <-cancelled)
	failed := events.wait(t, amqp.RecoveryEntityFailed)
	require.ErrorIs(t, failed.Err, amqp.ErrNotFound)
	require.Nil(t, cons.Err(), "the consumer waits for its queue")

	queueGone.Store(false)
	events.wait(t, amqp.RecoveryConsumerResubscribed)
	require.NoError(t, sc.Deliver(ctx, 1, "c", 1, amqp.Properties{}, []byte("back")))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "back", string(d.Body))
	require.NoError(t, cons.Cancel(ctx))
}

// TestResubscribingConsumerEndsWithClose checks that a consumer waiting to
// resubscribe (unregistered from its channel) still ends when the
// connection is closed.
func TestResubscribingConsumerEndsWithClose(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, _ int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.QueueDeclare); ok && m.Passive {
			return true, c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue", m)
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	require.NoError(t, err)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cons, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"}, amqp.ConsumerOptions{Resubscribe: true})
	require.NoError(t, err)
	require.NoError(t, b.conn(t, 0).Send(ctx, 1, &amqp.BasicCancel{ConsumerTag: "c", NoWait: true}))
	events.wait(t, amqp.RecoveryEntityFailed)

	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, conn.Close(closeCtx))
	select {
	case <-cons.Done():
		require.ErrorIs(t, cons.Err(), amqp.ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("the resubscribing consumer never ended after Close")
	}
}
