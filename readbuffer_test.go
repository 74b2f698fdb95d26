package amqp

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// chunkedReader returns its chunks one per Read, like a socket that
// receives them one at a time.
type chunkedReader struct{ chunks [][]byte }

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if r.chunks[0] = r.chunks[0][n:]; len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// The read buffer grows when reads fill it and goes back to the small one
// when the traffic is light, and frames of every size come out whole.
func TestFrameReaderSizesItsBufferByUse(t *testing.T) {
	frame := func(size int, fill byte) []byte {
		return AppendBodyFrames(nil, 1, bytes.Repeat([]byte{fill}, size), 0)
	}
	var burst []byte
	sizes := []int{10, 5000, 100, 200 << 10, 1, 120 << 10, 3000}
	for i, size := range sizes {
		burst = append(burst, frame(size, byte(i))...)
	}
	quiet := frame(8, 9)
	fr := NewFrameReader(&chunkedReader{chunks: [][]byte{burst, quiet}})
	fr.SetMaxFrameSize(0)
	for i, size := range sizes {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		require.Equal(t, bytes.Repeat([]byte{byte(i)}, size), f.Payload, "frame %d", i)
	}
	require.Len(t, fr.buf, readBufferSize, "reads that filled the buffer made it grow")
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte{9}, 8), f.Payload)
	_, err = fr.peek(1) // the next read finds the socket quiet
	require.ErrorIs(t, err, io.EOF)
	require.Len(t, fr.buf, readBufferSmall, "a quiet connection keeps only the small buffer")
}
