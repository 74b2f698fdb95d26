package amqp_test

import (
	"context"
	"testing"

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

	require.NoError(t, ds[1].Ack(ctx, amqp.AckOptions{Multiple: true}))
	_, ack := amqptest.Expect[*amqp.BasicAck](t, sc)
	require.Equal(t, amqp.BasicAck{DeliveryTag: 2, Multiple: true}, *ack)

	require.NoError(t, ds[2].Nack(ctx, amqp.NackOptions{Requeue: true}))
	_, nack := amqptest.Expect[*amqp.BasicNack](t, sc)
	require.Equal(t, amqp.BasicNack{DeliveryTag: 3, Requeue: true}, *nack)

	require.NoError(t, ds[3].Reject(ctx, amqp.RejectOptions{Requeue: true}))
	_, reject := amqptest.Expect[*amqp.BasicReject](t, sc)
	require.Equal(t, amqp.BasicReject{DeliveryTag: 4, Requeue: true}, *reject)

	// Settled already (by the multiple ack, or twice): nothing is sent.
	require.ErrorIs(t, ds[0].Reject(ctx, amqp.RejectOptions{}), amqp.ErrAlreadySettled)
	require.ErrorIs(t, ds[3].Ack(ctx, amqp.AckOptions{}), amqp.ErrAlreadySettled)
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
		{"ack", func(d *amqp.Delivery) error { return d.Ack(ctx, amqp.AckOptions{}) }},
		{"nack", func(d *amqp.Delivery) error { return d.Nack(ctx, amqp.NackOptions{Requeue: true}) }},
		{"reject", func(d *amqp.Delivery) error { return d.Reject(ctx, amqp.RejectOptions{}) }},
	}
	// AllocsPerRun runs its function once more than asked, to warm up.
	require.NoError(t, sc.Deliver(ctx, id, "c", len(settles)*(runs+1), amqp.Properties{}, []byte("m")))
	sinkCtx, stopSink := context.WithCancel(ctx)
	go func() { defer close(sunk); _, _ = sc.Sink(sinkCtx) }()
	t.Cleanup(func() { stopSink(); <-sunk })
	for _, s := range settles {
		deliveries := make([]*amqp.Delivery, runs+1)
		for i := range deliveries {
			d, err := cons.Next(ctx)
			require.NoError(t, err)
			deliveries[i] = d
		}
		i := 0
		allocs := testing.AllocsPerRun(runs, func() {
			if err := s.do(deliveries[i]); err != nil {
				t.Fatal(err)
			}
			i++
		})
		require.Zero(t, allocs, s.name)
	}
}
