package amqp

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

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
