package amqp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func rawFrame(t FrameType, channel uint16, payload []byte, end byte) []byte {
	b := []byte{byte(t), byte(channel >> 8), byte(channel)}
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, end)
}

func TestReadFrameRoundTrip(t *testing.T) {
	var stream []byte
	stream, err := AppendMethodFrame(stream, 3, &QueueDeclare{Queue: "q", Durable: true})
	require.NoError(t, err)
	stream, err = AppendHeaderFrame(stream, 3, 60, 5, &Properties{ContentType: "text/plain"})
	require.NoError(t, err)
	stream = AppendBodyFrames(stream, 3, []byte("hello"), 0)
	stream = AppendHeartbeatFrame(stream)

	fr := NewFrameReader(bytes.NewReader(stream))
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, FrameMethod, f.Type)
	require.Equal(t, uint16(3), f.Channel)
	m, err := DecodeMethod(f.Payload)
	require.NoError(t, err)
	require.Equal(t, &QueueDeclare{Queue: "q", Durable: true}, m)

	f, err = fr.ReadFrame()
	require.NoError(t, err)
	h, err := DecodeContentHeader(f.Payload)
	require.NoError(t, err)
	require.Equal(t, uint64(5), h.BodySize)
	require.Equal(t, "text/plain", h.Properties.ContentType)

	f, err = fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, FrameBody, f.Type)
	require.Equal(t, "hello", string(f.Payload))

	f, err = fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, FrameHeartbeat, f.Type)

	_, err = fr.ReadFrame()
	require.ErrorIs(t, err, io.EOF)
}

// countingReader records how many bytes were requested, to prove an
// oversized frame is refused after its 7-byte header is read.
type countingReader struct {
	r    io.Reader
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func TestReadFrameRejectsOversizedFrameBeforeReadingIt(t *testing.T) {
	// Claims a 1 GiB payload; only the header is present.
	hdr := []byte{byte(FrameBody), 0, 1}
	hdr = binary.BigEndian.AppendUint32(hdr, 1<<30)
	cr := &countingReader{r: bytes.NewReader(hdr)}
	fr := NewFrameReader(cr)
	fr.SetMaxFrameSize(131072)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := fr.ReadFrame()
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, ErrFrameTooLarge)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "nothing near the claimed 1 GiB is allocated")
	require.Equal(t, len(hdr), cr.read, "only the header was read")
	_, err = NewFrameReader(bytes.NewReader(hdr)).ReadFrame()
	require.ErrorIs(t, err, ErrFrameTooLarge, "before tuning the limit is MinFrameSize")
	require.Contains(t, err.Error(), "frame_max 4096")
}

func TestReadFrameFrameMaxBoundary(t *testing.T) {
	payload := make([]byte, 4096-frameOverhead)
	fr := NewFrameReader(bytes.NewReader(rawFrame(FrameBody, 1, payload, frameEndOctet)))
	_, err := fr.ReadFrame()
	require.NoError(t, err, "a frame of exactly frame_max bytes is allowed")

	fr = NewFrameReader(bytes.NewReader(rawFrame(FrameBody, 1, append(payload, 0), frameEndOctet)))
	_, err = fr.ReadFrame()
	require.ErrorIs(t, err, ErrFrameTooLarge)
}

func TestReadFrameLargerThanBuffer(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 3*readBufferSize)
	fr := NewFrameReader(bytes.NewReader(rawFrame(FrameBody, 1, payload, frameEndOctet)))
	fr.SetMaxFrameSize(0)
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, payload, f.Payload)
}

func TestReadFrameRejectsBadInput(t *testing.T) {
	for name, tc := range map[string]struct {
		stream []byte
		want   error
	}{
		"bad end octet":   {rawFrame(FrameMethod, 0, []byte{0, 10, 0, 11}, 0xCD), ErrMalformedFrame},
		"unknown type":    {rawFrame(FrameType(5), 0, nil, frameEndOctet), ErrMalformedFrame},
		"truncated":       {rawFrame(FrameBody, 1, []byte("abc"), frameEndOctet)[:9], io.ErrUnexpectedEOF},
		"truncated early": {[]byte{1, 0}, io.ErrUnexpectedEOF},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewFrameReader(bytes.NewReader(tc.stream)).ReadFrame()
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestAppendBodyFramesSplitsByFrameMax(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 10000)
	b := AppendBodyFrames(nil, 2, body, 4096)
	fr := NewFrameReader(bytes.NewReader(b))
	var got []byte
	frames := 0
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.LessOrEqual(t, len(f.Payload)+frameOverhead, 4096)
		got = append(got, f.Payload...)
		frames++
	}
	require.Equal(t, 3, frames)
	require.Equal(t, body, got)
	require.Empty(t, AppendBodyFrames(nil, 2, nil, 4096), "an empty body has no body frame")
	require.NotEmpty(t, AppendBodyFrames(nil, 2, []byte("x"), 5), "a frame_max below the minimum does not loop")
}

// FuzzReadFrame feeds arbitrary streams to the frame reader and decodes what
// it accepts: nothing may panic, and a frame is never longer than the limit.
func FuzzReadFrame(f *testing.F) {
	seed, _ := AppendMethodFrame(nil, 1, &BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, Exchange: "e", RoutingKey: "k"})
	seed, _ = AppendHeaderFrame(seed, 1, 60, 3, &Properties{Headers: Table{"a": int32(1)}})
	seed = AppendBodyFrames(seed, 1, []byte("abc"), 0)
	f.Add(seed)
	f.Add(AppendHeartbeatFrame(nil))
	f.Add(rawFrame(FrameMethod, 0, []byte{0, 10, 0, 10}, frameEndOctet))
	f.Add(rawFrame(FrameBody, 1, nil, 0))
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := NewFrameReader(bytes.NewReader(stream))
		for range 64 {
			frame, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if len(frame.Payload)+frameOverhead > MinFrameSize {
				t.Fatalf("frame of %d bytes passed a %d limit", len(frame.Payload)+frameOverhead, MinFrameSize)
			}
			switch frame.Type {
			case FrameMethod:
				_, _ = DecodeMethod(frame.Payload)
			case FrameHeader:
				_, _ = DecodeContentHeader(frame.Payload)
			}
		}
	})
}

// The reader decodes a reply (any method not decoded into rxScratch) with
// one allocation: the method itself.
func TestDecodeMethodIntoAllocatesOnlyTheMethod(t *testing.T) {
	frame, err := AppendMethodFrame(nil, 1, &QueueDeclareOk{Queue: "orders", MessageCount: 3, ConsumerCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	payload := frame[frameHeaderSize : len(frame)-1]
	var rx rxScratch
	var strings stringCache
	allocs := testing.AllocsPerRun(100, func() {
		m, err := decodeMethodInto(payload, &strings, &rx)
		if err != nil || m.(*QueueDeclareOk).Queue != "orders" {
			t.Fatalf("decoded %v, %v", m, err)
		}
	})
	if allocs != 1 {
		t.Errorf("%v allocations per decode, want 1", allocs)
	}
}

// The fuzz targets feed hostile payloads to the decoders. Decoding must never
// panic; whatever decodes must encode again, and that encoding must be stable
// (decode and encode once more: same bytes). Bytes rather than values are
// compared because a table may hold a NaN, which is never equal to itself.

func FuzzDecodeMethod(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, k := range allMethodKeys {
		m := newMethod(k)
		f.Add(encodeMethod(f, m))
		randomize(r, m)
		f.Add(encodeMethod(f, m))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeMethod(payload)
		if err != nil {
			return
		}
		once := encodeMethod(t, m)
		m2, err := DecodeMethod(once)
		if err != nil {
			t.Fatalf("decoding the re-encoding of %s: %v\npayload % x\nre-encoded % x", m.MethodName(), err, payload, once)
		}
		if twice := encodeMethod(t, m2); !bytes.Equal(once, twice) {
			t.Fatalf("%s: unstable encoding\nonce  % x\ntwice % x", m.MethodName(), once, twice)
		}
	})
}

func FuzzDecodeContentHeader(f *testing.F) {
	_, props, _ := testPublishFixture()
	f.Add(encodeHeader(f, ContentHeader{ClassID: classBasic, BodySize: 10, Properties: *props}))
	f.Add(encodeHeader(f, ContentHeader{ClassID: classBasic}))
	r := rand.New(rand.NewPCG(9, 10))
	for range 8 {
		h := ContentHeader{ClassID: classBasic, BodySize: r.Uint64()}
		randomize(r, &h.Properties)
		f.Add(encodeHeader(f, h))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		h, err := DecodeContentHeader(payload)
		if err != nil {
			return
		}
		once := encodeHeader(t, h)
		h2, err := DecodeContentHeader(once)
		if err != nil {
			t.Fatalf("decoding the re-encoding: %v\npayload % x\nre-encoded % x", err, payload, once)
		}
		if twice := encodeHeader(t, h2); !bytes.Equal(once, twice) {
			t.Fatalf("unstable encoding\nonce  % x\ntwice % x", once, twice)
		}
	})
}

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

// timeoutReader returns the stream in pieces of at most step bytes, with a
// read deadline's timeout after every piece: the reads of a leading Next
// whose ctx keeps ending (lead.go).
type timeoutReader struct {
	data    []byte
	step    int
	timeout bool
}

func (r *timeoutReader) Read(p []byte) (int, error) {
	if r.timeout = !r.timeout; r.timeout {
		return 0, os.ErrDeadlineExceeded
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.step)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// A read that times out, anywhere in a frame (in the read buffer or in a
// frame larger than it), leaves the frame reader where it was: the next
// ReadFrame goes on, and every frame comes out whole and in order.
func TestReadFrameGoesOnAfterATimeout(t *testing.T) {
	var stream []byte
	var want [][]byte
	for i, size := range []int{0, 1, 7, 100, 4 << 10, readBufferSize - frameOverhead, readBufferSize + 1, 3 * readBufferSize, 5} {
		payload := bytes.Repeat([]byte{byte('a' + i)}, size)
		want = append(want, payload)
		stream = append(stream, rawFrame(FrameBody, uint16(i+1), payload, frameEndOctet)...)
	}
	for _, step := range []int{1, 3, 5000, 1 << 20} {
		fr := NewFrameReader(&timeoutReader{data: stream, step: step})
		fr.SetMaxFrameSize(0)
		timeouts := 0
		for i := 0; i < len(want); {
			f, err := fr.ReadFrame()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				timeouts++
				continue
			}
			require.NoError(t, err, "step %d, frame %d", step, i)
			require.Equal(t, uint16(i+1), f.Channel, "step %d", step)
			require.Equal(t, want[i], f.Payload, "step %d, frame %d", step, i)
			i++
		}
		require.Positive(t, timeouts)
		_, err := fr.ReadFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			_, err = fr.ReadFrame()
		}
		require.ErrorIs(t, err, io.EOF, "the stream ends where the last frame does")
	}
}
