package amqp

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// FuzzAssembleContentHeader feeds hostile content headers to the reader's
// assembly: only a header too short to hold its body size (or one over the
// size limit) may fail the frame, and so the connection; anything after that
// is the message's own ContentError, and whatever decodes matches
// DecodeContentHeader.
func FuzzAssembleContentHeader(f *testing.F) {
	_, props, _ := testPublishFixture()
	f.Add(encodeHeader(f, ContentHeader{ClassID: classBasic, BodySize: 10, Properties: *props}))
	f.Add([]byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 3, 1, 'k', '?'})
	f.Add([]byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x98, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, payload []byte) {
		const maxBody = 1 << 20
		var a assembly
		var bin deliveryBin
		a.begin(&BasicDeliver{})
		_, err := a.header(payload, maxBody, nil, &bin)
		want, werr := DecodeContentHeader(payload)
		if len(payload) < 12 {
			if err == nil {
				t.Fatalf("a %d-byte header passed", len(payload))
			}
			return
		}
		size := binary.BigEndian.Uint64(payload[4:12])
		if size > maxBody {
			if err == nil {
				t.Fatal("a body over the limit passed")
			}
			return
		}
		if err != nil {
			t.Fatalf("framing was intact but the header failed the connection: %v", err)
		}
		if (a.msg.err == nil) != (werr == nil) {
			t.Fatalf("assembly says %v, DecodeContentHeader says %v", a.msg.err, werr)
		}
		if werr == nil && !bytes.Equal(encodeHeader(t, want), encodeHeader(t, ContentHeader{ClassID: want.ClassID, BodySize: size, Properties: a.msg.Properties})) {
			t.Fatal("the assembly decoded other properties than DecodeContentHeader")
		}
		if a.msg.err != nil && !bytes.Equal(a.msg.err.Header, payload) {
			t.Fatal("the raw header was not kept")
		}
	})
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
