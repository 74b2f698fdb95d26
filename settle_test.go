package amqp_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Each acknowledgement goes out as its method with the delivery's tag and
// the options asked for.
func TestSettleFrames(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
	require.NoError(t, sc.Deliver(ctx, id, "c", 4, amqp.Properties{}, []byte("m")))
	ds := make([]*amqp.Delivery, 4)
	for i := range ds {
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		ds[i] = d
	}

	require.NoError(t, ds[1].Ack(amqp.AckOptions{Multiple: true}))
	_, ack := amqptest.Expect[*amqp.BasicAck](t, sc)
	require.Equal(t, amqp.BasicAck{DeliveryTag: 2, Multiple: true}, *ack)

	require.NoError(t, ds[2].Nack(amqp.NackOptions{Requeue: true}))
	_, nack := amqptest.Expect[*amqp.BasicNack](t, sc)
	require.Equal(t, amqp.BasicNack{DeliveryTag: 3, Requeue: true}, *nack)

	require.NoError(t, ds[3].Reject(amqp.RejectOptions{Requeue: true}))
	_, reject := amqptest.Expect[*amqp.BasicReject](t, sc)
	require.Equal(t, amqp.BasicReject{DeliveryTag: 4, Requeue: true}, *reject)

	// Settled already (by the multiple ack, or twice): nothing is sent.
	require.ErrorIs(t, ds[0].Reject(amqp.RejectOptions{}), amqp.ErrAlreadySettled)
	require.ErrorIs(t, ds[3].Ack(amqp.AckOptions{}), amqp.ErrAlreadySettled)
}

// Acknowledging allocates nothing: with a consumer that acks (or nacks, or
// rejects) each message, an allocation per acknowledgement would cost as
// much as the delivery itself.
func TestSettleAllocatesNothing(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
	sunk := make(chan struct{})
	const runs = 100
	settles := []struct {
		name string
		do   func(*amqp.Delivery) error
	}{
		{"ack", func(d *amqp.Delivery) error { return d.Ack(amqp.AckOptions{}) }},
		{"nack", func(d *amqp.Delivery) error { return d.Nack(amqp.NackOptions{Requeue: true}) }},
		{"reject", func(d *amqp.Delivery) error { return d.Reject(amqp.RejectOptions{}) }},
	}
	// AllocsPerRun runs its function once more than asked, to warm up.
	require.NoError(t, sc.Deliver(ctx, id, "c", len(settles)*allocTries*(runs+1), amqp.Properties{}, []byte("m")))
	sinkCtx, stopSink := context.WithCancel(ctx)
	go func() { defer close(sunk); _, _ = sc.Sink(sinkCtx) }()
	t.Cleanup(func() { stopSink(); <-sunk })
	for _, s := range settles {
		deliveries := make([]*amqp.Delivery, allocTries*(runs+1))
		for i := range deliveries {
			d, err := cons.Next(ctx)
			require.NoError(t, err)
			deliveries[i] = d
		}
		i := 0
		allocs := leastAllocsPerRun(runs, func() {
			if err := s.do(deliveries[i]); err != nil {
				t.Fatal(err)
			}
			i++
		})
		require.Zero(t, allocs, s.name)
	}
}

// Settling never waits: not for room in the write queue, which a server
// that stopped reading leaves full and Publish waits on. So a delivery is
// settled the same way whatever became of the context it was consumed with.
func TestSettleDoesNotWaitForTheWriteQueue(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
	require.NoError(t, sc.Deliver(ctx, id, "c", 2, amqp.Properties{}, []byte("m")))
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	first, err := cons.Next(consumeCtx)
	require.NoError(t, err)
	second, err := cons.Next(consumeCtx)
	require.NoError(t, err)
	stopConsuming()

	// The server reads nothing more. Publish until a publish waits for the
	// write queue (it waits nowhere else here): the queue is then full, and
	// stays full.
	body := make([]byte, 64<<10)
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := cons.Channel().Publish(pctx, amqp.Publishing{RoutingKey: "q", Body: body})
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			break
		}
	}

	settled := make(chan error, 1)
	go func() {
		settled <- errors.Join(first.Ack(amqp.AckOptions{}), second.Nack(amqp.NackOptions{Requeue: true}))
	}()
	select {
	case err := <-settled:
		require.NoError(t, err)
	case <-time.After(30 * time.Second): // generous: settling takes microseconds
		t.Fatal("Ack or Nack waited for room in the write queue")
	}
}
