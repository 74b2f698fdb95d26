package amqp

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// FrameType is the first octet of an AMQP frame.
type FrameType uint8

// The frame types of AMQP 0-9-1.
const (
	FrameMethod    FrameType = 1
	FrameHeader    FrameType = 2
	FrameBody      FrameType = 3
	FrameHeartbeat FrameType = 8
)

func (t FrameType) String() string {
	switch t {
	case FrameMethod:
		return "method"
	case FrameHeader:
		return "header"
	case FrameBody:
		return "body"
	case FrameHeartbeat:
		return "heartbeat"
	}
	return fmt.Sprintf("frame-type(%d)", uint8(t))
}

const (
	frameHeaderSize = 7    // type, channel, size
	frameEndOctet   = 0xCE // the octet that ends every frame
	frameOverhead   = frameHeaderSize + 1

	// MinFrameSize is the smallest frame_max a peer may negotiate, and the
	// limit that applies before tuning.
	MinFrameSize = 4096
)

// ProtocolHeader is what a client sends first to ask for AMQP 0-9-1.
var ProtocolHeader = [8]byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1}

// Method is an AMQP method: one of the generated structs such as
// [QueueDeclare] or [BasicDeliver], always used through a pointer. The
// interface is sealed; only this package's generated types implement it.
type Method interface {
	// ClassID and MethodID are the method's ids in the specification.
	ClassID() uint16
	MethodID() uint16
	// MethodName is the specification's name, such as "queue.declare".
	MethodName() string

	key() methodKey                    // ClassID<<16 | MethodID
	synchronous() bool                 // the sender waits for one of the replies
	isReply(methodKey) bool            // whether k answers this (synchronous) method
	hasContent() bool                  // a content header and body frames follow
	appendArgs([]byte) ([]byte, error) // encode the arguments (not the ids)
	decodeArgs(*decoder)               // decode the arguments (not the ids)
}

// methodKey identifies a method by class and method id in one comparable value.
type methodKey uint32

func keyOf(classID, methodID uint16) methodKey { return methodKey(classID)<<16 | methodKey(methodID) }

// Frame is one frame as read from the wire. Payload is only valid until the
// next call to ReadFrame: whoever keeps its bytes copies them.
type Frame struct {
	Type    FrameType
	Channel uint16
	Payload []byte
}

// FrameReader reads frames from a stream. It rejects a frame whose declared
// size exceeds the limit before reading or allocating its payload, and a frame
// whose end octet is not 0xCE. It is not safe for concurrent use.
//
// Its buffer is sized by use: it starts at 4 KiB, moves to a 128 KiB buffer
// (shared through a pool) when a read fills it, and back when a read finds
// next to nothing (a heartbeat, an RPC reply), so an idle connection holds
// 4 KiB while a busy one reads many frames per system call.
type FrameReader struct {
	src     io.Reader
	buf     []byte // the buffered bytes are buf[r:w]
	r, w    int
	small   []byte // the small buffer, kept for the quiet times
	full    bool   // the last read filled the space it was given
	lastN   int    // bytes the last read returned
	big     []byte // reused for payloads that do not fit in a read buffer
	maxSize uint32 // largest whole frame accepted, header and end octet included

	// A frame too large for the read buffer, read into big: its header and
	// how much of it has arrived. A read that times out leaves it here, and
	// the next ReadFrame goes on with it.
	part      Frame
	partWhole []byte
	partN     int
}

const (
	// readBufferSize is big enough that a typical frame is decoded in place,
	// with one read system call for many small frames.
	readBufferSize = 128 << 10
	// readBufferSmall is the buffer of a quiet connection.
	readBufferSmall = 4 << 10
	// readQuietBelow is a read small enough to mean the connection is quiet:
	// a stream of messages, however slow, keeps the large buffer.
	readQuietBelow = 512
)

// readBuffers holds the large read buffers of connections that went quiet.
var readBuffers = sync.Pool{New: func() any { return new([readBufferSize]byte) }}

// NewFrameReader returns a FrameReader that accepts frames of up to
// MinFrameSize bytes until SetMaxFrameSize raises the limit. It reads ahead
// into its own buffer, so once it has read from r nobody else should.
func NewFrameReader(r io.Reader) *FrameReader {
	small := make([]byte, readBufferSmall)
	return &FrameReader{src: r, buf: small, small: small, maxSize: MinFrameSize}
}

// SetMaxFrameSize sets the largest whole frame (header and end octet
// included) that ReadFrame accepts: the negotiated frame_max. Zero means no
// limit other than the 32-bit size field.
func (fr *FrameReader) SetMaxFrameSize(n uint32) { fr.maxSize = n }

// resize switches to a buffer of the size the traffic asks for, keeping the
// buffered bytes: the large one when the last read filled the buffer or a
// frame needs more than the small one holds, the small one when the buffer
// is empty and the last read found next to nothing.
func (fr *FrameReader) resize(need int) {
	large := len(fr.buf) == readBufferSize
	switch {
	case !large && (fr.full || need > len(fr.buf)):
		fr.moveTo(readBuffers.Get().(*[readBufferSize]byte)[:])
	case large && fr.r == fr.w && fr.lastN < readQuietBelow && need <= readBufferSmall:
		old := fr.buf
		fr.moveTo(fr.small)
		readBuffers.Put((*[readBufferSize]byte)(old))
	}
}

func (fr *FrameReader) moveTo(b []byte) {
	n := copy(b, fr.buf[fr.r:fr.w])
	fr.buf, fr.r, fr.w = b, 0, n
}

// fill reads until at least need bytes (at most the large buffer's size)
// are buffered.
func (fr *FrameReader) fill(need int) error {
	for fr.w-fr.r < need {
		if fr.r == fr.w {
			fr.r, fr.w = 0, 0
		}
		fr.resize(need)
		if len(fr.buf)-fr.r < need {
			fr.moveTo(fr.buf) // compact: the frame's start goes to the front
		}
		space := len(fr.buf) - fr.w
		n, err := fr.src.Read(fr.buf[fr.w:])
		fr.w += n
		fr.full, fr.lastN = n == space, n
		if fr.w-fr.r >= need {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// peek returns the next n bytes without consuming them.
func (fr *FrameReader) peek(n int) ([]byte, error) {
	if err := fr.fill(n); err != nil {
		if err == io.EOF && fr.w > fr.r {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return fr.buf[fr.r : fr.r+n], nil
}

// ReadFrame reads the next frame. Errors wrap ErrFrameTooLarge or
// ErrMalformedFrame for bad input and are I/O errors otherwise. After an I/O
// error that is a timeout (the source's read deadline, [os.ErrDeadlineExceeded])
// the next ReadFrame goes on where this one stopped; after any other error
// the stream is out of sync and must be abandoned.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	if fr.partWhole != nil {
		return fr.readLarge()
	}
	hdr, err := fr.peek(frameHeaderSize)
	if err != nil {
		return Frame{}, err
	}
	f := Frame{Type: FrameType(hdr[0]), Channel: binary.BigEndian.Uint16(hdr[1:3])}
	size := binary.BigEndian.Uint32(hdr[3:7])
	if fr.maxSize != 0 && uint64(size)+frameOverhead > uint64(fr.maxSize) {
		return Frame{}, fmt.Errorf("%w: %s frame of %d bytes on channel %d exceeds frame_max %d",
			ErrFrameTooLarge, f.Type, uint64(size)+frameOverhead, f.Channel, fr.maxSize)
	}
	total := frameHeaderSize + int(size) + 1
	if total > readBufferSize {
		if cap(fr.big) < total {
			fr.big = make([]byte, total)
		}
		whole := fr.big[:total]
		n := copy(whole, fr.buf[fr.r:fr.w])
		fr.r += n
		fr.part, fr.partWhole, fr.partN = f, whole, n
		return fr.readLarge()
	}
	// Decode in place from the read buffer: no copy. The bytes stay valid
	// until the next ReadFrame.
	if err := fr.fill(total); err != nil {
		return Frame{}, unexpectedEOF(err)
	}
	whole := fr.buf[fr.r : fr.r+total]
	fr.r += total
	return checkFrame(f, whole)
}

// buffered reports whether a whole frame is buffered, so that ReadFrame
// will not read from the source.
func (fr *FrameReader) buffered() bool {
	n := fr.w - fr.r
	if fr.partWhole != nil || n < frameHeaderSize {
		return false
	}
	return uint64(n) >= uint64(binary.BigEndian.Uint32(fr.buf[fr.r+3:]))+frameOverhead
}

// readLarge reads the rest of a frame too large for the read buffer.
func (fr *FrameReader) readLarge() (Frame, error) {
	for fr.partN < len(fr.partWhole) {
		n, err := fr.src.Read(fr.partWhole[fr.partN:])
		fr.partN += n
		if err != nil && fr.partN < len(fr.partWhole) {
			return Frame{}, unexpectedEOF(err)
		}
	}
	f, whole := fr.part, fr.partWhole
	fr.part, fr.partWhole, fr.partN = Frame{}, nil, 0
	return checkFrame(f, whole)
}

// checkFrame checks a whole frame's end octet and type, and returns it with
// its payload.
func checkFrame(f Frame, whole []byte) (Frame, error) {
	if end := whole[len(whole)-1]; end != frameEndOctet {
		return Frame{}, fmt.Errorf("%w: frame end octet is 0x%02X, want 0xCE", ErrMalformedFrame, end)
	}
	switch f.Type {
	case FrameMethod, FrameHeader, FrameBody, FrameHeartbeat:
	default:
		return Frame{}, fmt.Errorf("%w: unknown frame type %d", ErrMalformedFrame, uint8(f.Type))
	}
	f.Payload = whole[frameHeaderSize : len(whole)-1]
	return f, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// DecodeMethod decodes a method frame's payload: class id, method id and arguments.
// The result does not alias payload.
func DecodeMethod(payload []byte) (Method, error) {
	return decodeMethodInto(payload, nil, nil)
}

// rxScratch holds the methods a channel receives at message rate, decoded
// in place rather than allocated; the reader consumes each before the next.
type rxScratch struct {
	deliver BasicDeliver
	ack     BasicAck
	nack    BasicNack
	dec     decoder // for the other methods: decodeArgs through the interface would move a local decoder to the heap
}

// decodeMethodInto is DecodeMethod for the reader's hot path: strings go
// through cache, and the methods in rx (when not nil) are decoded into it.
func decodeMethodInto(payload []byte, cache *stringCache, rx *rxScratch) (Method, error) {
	d := decoder{buf: payload, strings: cache}
	classID, methodID := d.short(), d.short()
	if d.err != nil {
		return nil, d.err
	}
	k := keyOf(classID, methodID)
	if rx != nil {
		// Concrete calls: d does not escape, so these decode without
		// allocating (the generic path below needs a heap copy).
		var m Method
		switch k {
		case keyBasicDeliver:
			rx.deliver = BasicDeliver{}
			rx.deliver.decodeArgs(&d)
			m = &rx.deliver
		case keyBasicAck:
			rx.ack = BasicAck{}
			rx.ack.decodeArgs(&d)
			m = &rx.ack
		case keyBasicNack:
			rx.nack = BasicNack{}
			rx.nack.decodeArgs(&d)
			m = &rx.nack
		}
		if m != nil {
			if err := d.finish(); err != nil {
				return nil, fmt.Errorf("decoding %s: %w", m.MethodName(), err)
			}
			return m, nil
		}
	}
	m := newMethod(k)
	if m == nil {
		return nil, fmt.Errorf("%w: class %d method %d", ErrUnknownMethod, classID, methodID)
	}
	var generic *decoder
	if rx != nil {
		rx.dec = d
		generic = &rx.dec
	} else {
		generic = new(decoder)
		*generic = d
	}
	m.decodeArgs(generic)
	if err := generic.finish(); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", m.MethodName(), err)
	}
	return m, nil
}

// ContentHeader is the decoded payload of a content header frame.
type ContentHeader struct {
	ClassID    uint16
	BodySize   uint64
	Properties Properties
}

// DecodeContentHeader decodes a header frame's payload. The result does not alias payload.
// (The reader decodes headers straight into its Delivery: assembly.header.)
func DecodeContentHeader(payload []byte) (ContentHeader, error) {
	d := newDecoder(payload)
	var h ContentHeader
	h.ClassID = d.short()
	d.short() // weight: unused, always 0
	h.BodySize = d.longlong()
	h.Properties.decode(&d)
	if err := d.finish(); err != nil {
		return ContentHeader{}, fmt.Errorf("decoding content header: %w", err)
	}
	return h, nil
}

// beginFrame appends a frame header with a zero size and returns the buffer
// and the offset at which endFrame patches in the size.
func beginFrame(dst []byte, t FrameType, channel uint16) ([]byte, int) {
	dst = append(dst, byte(t), byte(channel>>8), byte(channel), 0, 0, 0, 0)
	return dst, len(dst)
}

// endFrame patches the payload size written since start and appends the end octet.
func endFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start-4:start], uint32(len(dst)-start))
	return append(dst, frameEndOctet)
}

// AppendMethodFrame appends a method frame carrying m on channel to dst. On
// error (a value that cannot be encoded) dst is returned unchanged in length.
func AppendMethodFrame(dst []byte, channel uint16, m Method) ([]byte, error) {
	return appendMethodFrame(dst, channel, m)
}

func appendMethodFrame(dst []byte, channel uint16, m Method) ([]byte, error) {
	orig := len(dst)
	dst, start := beginFrame(dst, FrameMethod, channel)
	dst = appendShort(dst, m.ClassID())
	dst = appendShort(dst, m.MethodID())
	dst, err := m.appendArgs(dst)
	if err != nil {
		return dst[:orig], err
	}
	return endFrame(dst, start), nil
}

// AppendHeaderFrame appends a content header frame to dst.
func AppendHeaderFrame(dst []byte, channel, classID uint16, bodySize uint64, p *Properties) ([]byte, error) {
	orig := len(dst)
	dst, start := beginFrame(dst, FrameHeader, channel)
	dst = appendShort(dst, classID)
	dst = appendShort(dst, 0) // weight
	dst = appendLonglong(dst, bodySize)
	dst, err := p.appendTo(dst)
	if err != nil {
		return dst[:orig], err
	}
	return endFrame(dst, start), nil
}

// AppendBodyFrames appends body to dst split into body frames that each fit
// in frameMax (0: one frame; a value below MinFrameSize, which no peer may
// negotiate, counts as MinFrameSize). An empty body appends nothing, as the
// spec asks.
func AppendBodyFrames(dst []byte, channel uint16, body []byte, frameMax uint32) []byte {
	chunk := bodyChunk(len(body), frameMax)
	for len(body) > 0 {
		n := min(chunk, len(body))
		var start int
		dst, start = beginFrame(dst, FrameBody, channel)
		dst = append(dst, body[:n]...)
		dst = endFrame(dst, start)
		body = body[n:]
	}
	return dst
}

// bodyChunk is how many bytes of a body of n bytes one body frame carries.
func bodyChunk(n int, frameMax uint32) int {
	if frameMax == 0 {
		return n
	}
	return int(max(frameMax, MinFrameSize)) - frameOverhead
}

// appendFrameHeader appends the header of a frame whose payload of size
// bytes the caller writes next, followed by the end octet.
func appendFrameHeader(dst []byte, t FrameType, channel uint16, size int) []byte {
	return append(dst, byte(t), byte(channel>>8), byte(channel), byte(size>>24), byte(size>>16), byte(size>>8), byte(size))
}

// AppendHeartbeatFrame appends a heartbeat frame (always on channel 0).
func AppendHeartbeatFrame(dst []byte) []byte {
	return append(dst, byte(FrameHeartbeat), 0, 0, 0, 0, 0, 0, frameEndOctet)
}
