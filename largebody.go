package amqp

import (
	"context"
	"net"
	"sync/atomic"
)

// Large bodies are written from the caller's slice instead of being copied
// into the pending buffer: the writer passes the frame headers (from pending)
// and the body chunks (from the slice) to one vectored write (writev), so a
// message's frames stay contiguous on the wire and nothing is copied. The
// publish waits until the writer is done with the slice, which is also the
// natural backpressure for big messages.

// largeBodyThreshold is the smallest body written from the caller's slice.
// Below it, copying costs less than waiting for the writer goroutine.
const largeBodyThreshold = 64 << 10

// Values of outBody.state.
const (
	bodyQueued   = iota // in pending, nobody has started writing it
	bodyClaimed         // the writer is writing from body
	bodyDetached        // the publisher gave up waiting: the writer writes from copy
)

// outBody is one message's body referred to by the writer's segments.
type outBody struct {
	body     []byte
	copy     []byte // set by the publisher before it moves state to bodyDetached
	state    atomic.Int32
	released atomic.Bool   // done was closed
	done     chan struct{} // closed when the writer no longer reads body (written or failed)
}

// segment is a body chunk that goes between pending[at-1] and pending[at]:
// after its frame header, before its frame end octet.
type segment struct {
	at     int
	b      *outBody
	lo, hi int // the chunk is b's body[lo:hi]
}

// claim gives the writer the bytes to write: the caller's slice, unless the
// publisher already detached with a copy.
func (b *outBody) claim() []byte {
	if b.state.CompareAndSwap(bodyQueued, bodyClaimed) {
		return b.body
	}
	return b.copy
}

// release tells the publisher the writer is done with the body.
func (b *outBody) release() {
	if b.released.CompareAndSwap(false, true) {
		close(b.done)
	}
}

// wait returns once the body's slice may be reused: it was written (or the
// write failed), or ctx ended before the writer began with it, in which case
// the message is sent from a copy. A write that has begun is waited for even
// after ctx ends: the kernel reads the slice until it returns, and the socket
// bounds it (a dead peer fails it, Close sets a deadline).
func (b *outBody) wait(ctx context.Context) {
	select {
	case <-b.done:
		return
	case <-ctx.Done():
	}
	if b.state.Load() != bodyQueued {
		<-b.done // the write has begun
		return
	}
	b.copy = append([]byte(nil), b.body...)
	if b.state.CompareAndSwap(bodyQueued, bodyDetached) {
		return
	}
	<-b.done
}

// vectored reports whether writes to conn are gathered by the kernel
// (net.Buffers uses writev only for these): elsewhere, such as TLS, each
// buffer would be a write of its own, and copying is cheaper.
func vectored(conn net.Conn) bool {
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// appendLarge appends a message whose body is written from its slice:
// encodeHead appends the method and header frames; the body frames'
// headers and end octets go into pending around segments that refer to
// body. It returns nil when the writer is not vectored or is down; the
// caller then copies (appendFrames). It never waits.
func (w *writer) appendLarge(encodeHead func([]byte) ([]byte, error), channel uint16, body []byte, frameMax uint32) (*outBody, error) {
	if !w.vectored {
		return nil, nil
	}
	ob := &outBody{body: body, done: make(chan struct{})}
	w.mu.Lock()
	if w.err != nil || w.closing {
		w.mu.Unlock()
		return nil, errWriterDown
	}
	wasEmpty := len(w.pending) == 0
	buf, err := encodeHead(w.pending)
	if err != nil {
		w.mu.Unlock()
		return nil, err
	}
	chunk := bodyChunk(len(body), frameMax)
	for lo := 0; lo < len(body); lo += chunk {
		hi := min(lo+chunk, len(body))
		buf = appendFrameHeader(buf, FrameBody, channel, hi-lo)
		w.segs = append(w.segs, segment{at: len(buf), b: ob, lo: lo, hi: hi})
		buf = append(buf, frameEndOctet)
	}
	w.pending = buf
	w.pendingLen.Store(int64(len(buf)))
	w.mu.Unlock()
	if wasEmpty {
		w.signal()
	}
	return ob, nil
}

// writeSegments writes batch with the body chunks segs refers to spliced
// in, one vectored write per message, claiming each message's body just
// before its write. Every body is released, written or not.
func (w *writer) writeSegments(batch []byte, segs []segment) error {
	pos := 0
	var err error
	for i := 0; i < len(segs); {
		ob := segs[i].b
		if err != nil {
			ob.release()
			for i < len(segs) && segs[i].b == ob {
				i++
			}
			continue
		}
		body := ob.claim()
		bufs := w.iov[:0]
		for ; i < len(segs) && segs[i].b == ob; i++ {
			s := segs[i]
			bufs = append(bufs, batch[pos:s.at], body[s.lo:s.hi])
			pos = s.at
		}
		w.iov = bufs
		nb := net.Buffers(bufs)
		_, err = nb.WriteTo(w.conn)
		clear(bufs) // do not pin the caller's body
		ob.release()
	}
	if err == nil && pos < len(batch) {
		_, err = w.conn.Write(batch[pos:])
	}
	return err
}

// releaseSegments releases the bodies of segments that will not be written.
func releaseSegments(segs []segment) {
	for _, s := range segs {
		s.b.release()
	}
}
