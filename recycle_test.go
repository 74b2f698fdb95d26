package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestReleaseRecyclesDelivery(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{Recycle: true})

	require.NoError(t, sc.Deliver(ctx, id, "c", 1, amqp.Properties{MessageID: "first"}, []byte("first body")))
	first, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "first body", string(first.Body))
	require.NoError(t, first.Ack(amqp.AckOptions{}))
	first.Release() // after Ack: fine
	first.Release() // a second Release is ignored, not binned twice
	amqptest.Expect[*amqp.BasicAck](t, sc)

	// The next message reuses the released delivery, fields reset.
	require.NoError(t, sc.Deliver(ctx, id, "c", 2, amqp.Properties{}, []byte("second")))
	second, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Same(t, first, second, "the released delivery is reused")
	require.Equal(t, "second", string(second.Body))
	require.Equal(t, uint64(2), second.DeliveryTag)
	require.Empty(t, second.MessageID, "properties of the earlier message are cleared")
	third, err := cons.Next(ctx)
	require.NoError(t, err)
	require.NotSame(t, second, third, "released twice, reused once")
	require.Equal(t, uint64(3), third.DeliveryTag)

	// Released before it was acknowledged: Ack is a local error, and a
	// multiple ack of a later delivery still settles it.
	second.Release()
	require.ErrorIs(t, second.Ack(amqp.AckOptions{}), amqp.ErrReleased)
	require.ErrorIs(t, second.Nack(amqp.NackOptions{}), amqp.ErrReleased)
	require.ErrorIs(t, second.Reject(amqp.RejectOptions{}), amqp.ErrReleased)
	require.NoError(t, third.Ack(amqp.AckOptions{Multiple: true}))
	_, ack := amqptest.Expect[*amqp.BasicAck](t, sc)
	require.Equal(t, uint64(3), ack.DeliveryTag)
	require.True(t, ack.Multiple)
}

func TestReleaseWithoutRecycleDoesNothing(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})

	require.NoError(t, sc.Deliver(ctx, id, "c", 1, amqp.Properties{}, []byte("m")))
	first, err := cons.Next(ctx)
	require.NoError(t, err)
	first.Release()
	require.NoError(t, sc.Deliver(ctx, id, "c", 1, amqp.Properties{}, []byte("n")))
	second, err := cons.Next(ctx)
	require.NoError(t, err)
	require.NotSame(t, first, second)
	require.Equal(t, "m", string(first.Body), "an unrecycled delivery stays intact")
	require.NoError(t, first.Ack(amqp.AckOptions{}), "Release of an unrecycled delivery does not stop its Ack")
	_, ack := amqptest.Expect[*amqp.BasicAck](t, sc)
	require.Equal(t, uint64(1), ack.DeliveryTag)
}

// A released delivery with a body over what a channel keeps for reuse (4 MiB)
// is reused without its body array.
func TestReleaseDropsLargeBody(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{Recycle: true})

	big := make([]byte, 4<<20+1)
	require.NoError(t, sc.Deliver(ctx, id, "c", 1, amqp.Properties{}, big))
	first, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Len(t, first.Body, len(big))
	first.Release()

	require.NoError(t, sc.Deliver(ctx, id, "c", 1, amqp.Properties{}, []byte("small")))
	second, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Same(t, first, second)
	require.Equal(t, "small", string(second.Body))
	require.Less(t, cap(second.Body), len(big), "the large body array was not kept")
}

// A channel keeps as many released deliveries for reuse as a consumer
// buffers by default, so a burst that size is recycled whole.
func TestReleaseKeepsABufferfulForReuse(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{Recycle: true})
	const n = amqp.DefaultBufferLimit
	released := make(map[*amqp.Delivery]bool, n)
	require.NoError(t, sc.Deliver(ctx, id, "c", n, amqp.Properties{}, []byte("m")))
	batch := make([]*amqp.Delivery, 0, n)
	for range n {
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		batch = append(batch, d)
	}
	for _, d := range batch {
		released[d] = true
		d.Release()
	}
	require.NoError(t, sc.Deliver(ctx, id, "c", n, amqp.Properties{}, []byte("m")))
	for i := range n {
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		require.True(t, released[d], "delivery %d of the second burst is a new allocation", i)
		delete(released, d)
	}
}
