package amqp

import (
	"context"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// The per-delivery and per-confirm bookkeeping reuses its arrays: a window
// that empties after each message must not allocate for the next one.
func TestTagWindowReusesItsArray(t *testing.T) {
	var w tagWindow
	tag := uint64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		tag++
		w.received(tag, false)
		require.NoError(t, w.settle(tag, false))
	})
	require.Zero(t, allocs)
}

func TestConfirmTrackerReusesItsArray(t *testing.T) {
	tr := confirmTracker{active: true, nextSeq: 1, base: 1}
	tr.block = make([]Confirmation, 1<<14) // the Confirmations' own blocks are not what is measured
	allocs := testing.AllocsPerRun(1000, func() {
		c := tr.add(nil)
		tr.resolve(c.seq, false, false)
	})
	require.Zero(t, allocs)
}

// A consumer whose reader stays one delivery behind must not grow its buffer
// with every delivery.
func TestConsumerBufferStaysBounded(t *testing.T) {
	c := &Consumer{ch: &Channel{}, limit: DefaultBufferLimit, ready: make(chan struct{}, 1), done: make(chan struct{})}
	ctx := context.Background()
	c.push(&Delivery{})
	for range 100_000 {
		c.push(&Delivery{})
		_, err := c.Next(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, 1, len(c.queue)-c.head)
	require.Less(t, cap(c.queue), 64, "the buffer holds one delivery but has grown to %d slots", cap(c.queue))
}

// A delivery with a small body is one allocation that fills its size class:
// a field added to Delivery (or a reordering that adds padding) would push
// every small message into the next class, 32 to 96 bytes more per message.
func TestDeliverySizeClasses(t *testing.T) {
	require.EqualValues(t, 304, unsafe.Sizeof(Delivery{}))
	require.EqualValues(t, 320, unsafe.Sizeof(deliveryWithTinyBody{}))
	require.EqualValues(t, 352, unsafe.Sizeof(deliveryWithShortBody{}))
	require.EqualValues(t, 448, unsafe.Sizeof(deliveryWithBody{}))
	var a assembly
	var bin deliveryBin
	for _, size := range []uint64{0, tinyBody, tinyBody + 1, shortBody, shortBody + 1, smallBody} {
		allocs := testing.AllocsPerRun(100, func() { a.newDelivery(size, &bin) })
		require.EqualValues(t, 1, allocs, "a %d-byte body", size)
		require.EqualValues(t, size, cap(a.newDelivery(size, &bin).Body))
	}
}
