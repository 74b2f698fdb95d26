package amqp

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// writer is the connection's single path to the socket. Callers encode their
// frames straight into a shared pending buffer under mu; the writer goroutine
// swaps it for a spare buffer and writes the whole batch with one Write call.
// Frames appended by one call are contiguous on the wire, so a message's
// method, header and body frames never interleave with another's, while
// concurrent publishers share one system call per batch rather than one each.
type writer struct {
	conn net.Conn

	mu      sync.Mutex
	pending []byte        // frames waiting for the writer goroutine; guarded by mu
	drained chan struct{} // closed when a batch is taken; created by waiters; guarded by mu
	err     error         // first write failure; sticky; guarded by mu
	closing bool          // no more frames accepted; guarded by mu
	segs    []segment     // large bodies spliced into pending (largebody.go); guarded by mu

	vectored bool // conn gathers vectored writes: large bodies are not copied (largebody.go)

	// Owned by the writer goroutine: the emptied buffers of the last batch,
	// for reuse, and the vector of the last vectored write.
	spare     []byte
	spareSegs []segment
	iov       [][]byte
	// trim fires once the connection has been quiet for writerQuietAfter
	// while the writer holds more than writerIdleCap: then it lets the
	// buffers go. Armed only then, so a busy writer pays nothing.
	trim      *time.Timer
	trimArmed bool

	pendingLen atomic.Int64 // len(pending), for waitRoom's lock-free fast path

	wake      chan struct{} // cap 1: pending became non-empty
	stop      chan struct{} // closed to make run flush what is pending and return
	exited    chan struct{} // closed when run returns
	lastWrite atomic.Int64  // unix nanos of the last successful write
	onError   func(error)   // told once about a write failure
}

const (
	// writerHighWater bounds the bytes callers may queue before they wait for
	// the socket: publishers feel backpressure instead of growing memory.
	writerHighWater = 1 << 20
	// writerKeepCap is the largest buffer kept after a batch; a larger one
	// (from a big message) is released so it does not pin memory.
	writerKeepCap = 4 << 20
	// writerIdleCap is what a quiet connection may keep of its write
	// buffers; after writerQuietAfter without writes it lets the rest go.
	writerIdleCap    = 4 << 10
	writerQuietAfter = time.Second
	// finalFlushTimeout bounds writing what is pending when the connection closes.
	finalFlushTimeout = 2 * time.Second
)

func newWriter(conn net.Conn, onError func(error)) *writer {
	w := &writer{
		conn:     conn,
		vectored: vectored(conn),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		exited:   make(chan struct{}),
		onError:  onError,
	}
	w.lastWrite.Store(time.Now().UnixNano())
	return w
}

// waitRoom waits until the pending buffer is below the high-water mark, the
// writer failed, or ctx ends. It does not reserve room: several callers may
// pass it together and overshoot the mark by their own frames, which is fine.
func (w *writer) waitRoom(ctx context.Context) error {
	if w.pendingLen.Load() < writerHighWater {
		return nil // the common case: no lock
	}
	for {
		w.mu.Lock()
		if w.err != nil || w.closing || len(w.pending) < writerHighWater {
			w.mu.Unlock()
			return nil
		}
		if w.drained == nil {
			w.drained = make(chan struct{})
		}
		drained := w.drained
		w.mu.Unlock()
		select {
		case <-drained:
		case <-w.stop:
			return nil // appendFrames reports the writer down
		case <-w.exited:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// appendFrames runs encode to append frames to the pending buffer and wakes
// the writer goroutine. encode must not block. If encode fails, nothing it
// appended is kept. It never waits: callers that should feel backpressure
// call waitRoom first (the reader, which must never block, does not).
func (w *writer) appendFrames(encode func([]byte) ([]byte, error)) error {
	w.mu.Lock()
	if w.err != nil || w.closing {
		w.mu.Unlock()
		return errWriterDown
	}
	wasEmpty := len(w.pending) == 0
	buf, err := encode(w.pending)
	if err != nil {
		w.mu.Unlock()
		return err
	}
	w.pending = buf
	w.pendingLen.Store(int64(len(buf)))
	w.mu.Unlock()
	if wasEmpty && len(buf) > 0 {
		w.signal()
	}
	return nil
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

func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run is the writer goroutine: it writes batches until stopped or failed.
func (w *writer) run() {
	defer close(w.exited)
	defer func() {
		if w.trim != nil {
			w.trim.Stop()
		}
	}()
	for {
		var trimmed <-chan time.Time
		if w.trimArmed {
			trimmed = w.trim.C
		}
		select {
		case <-w.wake:
		case <-trimmed:
			w.trimIfQuiet()
			continue
		case <-w.stop:
			w.flushFinal()
			return
		}
		if !w.writeBatch() {
			return
		}
		if !w.trimArmed && cap(w.spare) > writerIdleCap {
			w.armTrim(writerQuietAfter)
		}
	}
}

func (w *writer) armTrim(d time.Duration) {
	if w.trim == nil {
		w.trim = time.NewTimer(d)
	} else {
		w.trim.Reset(d)
	}
	w.trimArmed = true
}

// trimIfQuiet lets the write buffers go once nothing was written for
// writerQuietAfter: an idle connection should not pin the memory of its
// busiest moment. The next burst grows them again.
func (w *writer) trimIfQuiet() {
	w.trimArmed = false
	if since := time.Since(time.Unix(0, w.lastWrite.Load())); since < writerQuietAfter {
		w.armTrim(writerQuietAfter - since)
		return
	}
	w.spare = nil
	w.spareSegs = nil
	w.iov = nil
	w.mu.Lock()
	if len(w.pending) == 0 && cap(w.pending) > writerIdleCap {
		w.pending = nil
	}
	w.mu.Unlock()
}

// writeBatch takes everything pending and writes it, and reports false if the
// write failed. Only the writer goroutine writes: a caller writing itself
// could not honour its ctx once the write blocked on a peer that stopped
// reading. Frames appended meanwhile wake it again (appendFrames signals when
// it finds the buffer empty).
func (w *writer) writeBatch() bool {
	w.mu.Lock()
	batch, segs := w.pending, w.segs
	if len(batch) == 0 {
		w.mu.Unlock()
		return true
	}
	w.pending, w.segs = w.spare[:0], w.spareSegs[:0]
	w.pendingLen.Store(0)
	if w.drained != nil {
		close(w.drained)
		w.drained = nil
	}
	w.mu.Unlock()
	var err error
	if len(segs) == 0 {
		_, err = w.conn.Write(batch)
	} else {
		err = w.writeSegments(batch, segs)
		clear(segs) // do not pin the bodies
	}
	if err != nil {
		w.fail(err)
		return false
	}
	w.lastWrite.Store(time.Now().UnixNano())
	w.spare, w.spareSegs = nil, segs[:0]
	if cap(batch) <= writerKeepCap {
		w.spare = batch[:0]
	}
	return true
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

// flushFinal writes what is still pending when the writer is stopped, such
// as a close-ok, bounded by the deadline shutdown set.
func (w *writer) flushFinal() {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	w.writeBatch()
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	first := w.err == nil
	if first {
		w.err = err
	}
	releaseSegments(w.segs) // never written: their publishers must not wait
	w.segs = nil
	if w.drained != nil {
		close(w.drained)
		w.drained = nil
	}
	w.mu.Unlock()
	if first && w.onError != nil {
		w.onError(err)
	}
}

// shutdown makes run flush what is pending and return, and waits for it.
func (w *writer) shutdown() {
	w.mu.Lock()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.mu.Unlock()
	// Bound the write in progress (a peer that stopped reading) and the
	// final flush, so the socket is closed and nothing waits forever.
	_ = w.conn.SetWriteDeadline(time.Now().Add(finalFlushTimeout))
	<-w.exited
}
