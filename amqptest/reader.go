package amqptest

import (
	"encoding/binary"
	"io"
	"net"

	"github.com/amqp-go/amqp"
)

// The reader side of a connection: two goroutines per connection. The pump
// reads the socket ahead of the test; the reader splits the bytes into
// frames and hands them to the Conn's reads in batches.

// Read-ahead: the pump goroutine reads from the socket into up to
// pumpDepth chunks of at most pumpChunk bytes (1 MiB), as a socket buffer
// would hold, so that a client's writes do not wait for the test to read
// unless the test stops reading for long.
const (
	pumpChunk = 16 << 10
	pumpDepth = 64
)

// pump moves bytes from the socket to the reader goroutine through a
// bounded queue of chunks, which are recycled.
type pump struct {
	nc   net.Conn
	done <-chan struct{}
	full chan []byte // closed after err is set
	free chan []byte
	err  error // why reading the socket stopped

	// The reader goroutine's:
	cur, buf []byte
	// beforeWait is called when Read is about to wait for the socket; it
	// returns false if the connection was dropped meanwhile.
	beforeWait func() bool
}

func newPump(nc net.Conn, done <-chan struct{}) *pump {
	return &pump{nc: nc, done: done, full: make(chan []byte, pumpDepth), free: make(chan []byte, pumpDepth+2)}
}

// run is the pump goroutine.
func (p *pump) run() {
	defer close(p.full)
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		default:
			buf = make([]byte, pumpChunk)
		}
		n, err := p.nc.Read(buf[:pumpChunk])
		if n > 0 {
			select {
			case p.full <- buf[:n]:
			case <-p.done:
				p.err = net.ErrClosed
				return
			}
		}
		if err != nil {
			p.err = err
			return
		}
	}
}

// Read is the reader goroutine's side.
func (p *pump) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.buf != nil {
			select {
			case p.free <- p.buf[:cap(p.buf)]:
			default:
			}
			p.buf = nil
		}
		var buf []byte
		var ok bool
		select {
		case buf, ok = <-p.full:
		default:
			if p.beforeWait != nil && !p.beforeWait() {
				return 0, net.ErrClosed
			}
			select {
			case buf, ok = <-p.full:
			case <-p.done:
				return 0, net.ErrClosed
			}
		}
		if !ok {
			return 0, p.err
		}
		p.cur, p.buf = buf, buf
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// readLoop is the connection's reader goroutine. It owns the FrameReader
// and hands frames over in batches: it reads frames as long as it can
// without waiting and hands them over before it waits (see
// pump.beforeWait), or when the batch is full.
func (c *Conn) readLoop(p *pump) {
	defer c.srv.forget(c)
	var hi headerItem
	_, hi.err = io.ReadFull(p, hi.header[:])
	select {
	case c.hdr <- hi:
	case <-c.done:
		return
	}
	if hi.err != nil {
		return
	}
	var b *batch // being filled
	flush := func() bool {
		if b == nil || len(b.frames) == 0 && b.err == nil {
			return true
		}
		select {
		case c.batches <- b:
			b = nil
			return true
		case <-c.done:
			return false
		}
	}
	p.beforeWait = flush
	fr := amqp.NewFrameReader(p)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if b == nil {
				b = c.newBatch()
			}
			b.err = err
			flush()
			return
		}
		if f.Type == amqp.FrameMethod && f.Channel == 0 && methodID(f.Payload) == idConnectionTuneOk && len(f.Payload) >= 10 {
			// Frames after the client's tune-ok may be as large as it says.
			fr.SetMaxFrameSize(binary.BigEndian.Uint32(f.Payload[6:10]))
		}
		if b != nil && (len(b.buf)+len(f.Payload) > cap(b.buf) || len(b.frames) == batchFrames) && !flush() {
			return
		}
		if b == nil {
			b = c.newBatch()
		}
		if len(f.Payload) > cap(b.buf) {
			b.buf = make([]byte, 0, len(f.Payload))
		}
		start := len(b.buf)
		b.buf = append(b.buf, f.Payload...)
		f.Payload = b.buf[start:len(b.buf):len(b.buf)]
		b.frames = append(b.frames, f)
	}
}

// newBatch returns an empty batch, recycled if possible.
func (c *Conn) newBatch() *batch {
	select {
	case b := <-c.free:
		b.frames, b.buf = b.frames[:0], b.buf[:0]
		if cap(b.buf) > keepBytes {
			b.buf = make([]byte, 0, batchBytes)
		}
		return b
	default:
		return &batch{frames: make([]amqp.Frame, 0, 64), buf: make([]byte, 0, batchBytes)}
	}
}
