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
//
// This file holds what a large body is while the writer has it (outBody,
// segment) and who may touch the slice when (claim, release, wait). The
// writer's methods that append and write segments (appendLarge,
// writeSegments) are in writer.go with its other appends and writes, so this
// file needs nothing of the writer's.

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

// releaseSegments releases the bodies of segments that will not be written.
func releaseSegments(segs []segment) {
	for _, s := range segs {
		s.b.release()
	}
}
