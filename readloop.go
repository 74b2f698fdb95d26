package amqp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// readTracker records when the socket last delivered bytes, for the
// heartbeat monitor, at the cost of one atomic store per read system call.
// Before each read it wakes the consumers that the frames read so far
// filled (see wakeList): the FrameReader reads only once it has handed out
// every whole frame it buffered.
type readTracker struct {
	net.Conn
	l *link
}

func (r readTracker) Read(p []byte) (int, error) {
	r.l.wake.wakeAll()
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.l.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

// linkReader is the reader goroutine of one link, and the state only it
// touches (like http2's clientConnReadLoop): it reads frames, answers
// channel 0 and hands channel N's frames to that channel's channelReader.
// Nothing it calls waits for user code, except a full consumer buffer (see
// link.waitForRoom).
type linkReader struct {
	l       *link
	fr      *FrameReader
	strings stringCache // interned consumer tags, exchanges, routing keys
}

// readLoop is the reader goroutine, started by link.start once the
// handshake is done: it gives the loop its own state and runs it until the
// link ends.
func (l *link) readLoop() {
	r := &linkReader{l: l, fr: l.fr}
	l.lead.rd.Store(r)
	r.run()
}

func (r *linkReader) run() {
	defer r.l.wake.wakeAll()
	for {
		if c := r.lendable(); c != nil { // (only when no whole frame is buffered)
			if !r.lend(c) {
				return
			}
			continue
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.readFailed(err)
			return
		}
		if !r.handle(f) {
			return
		}
	}
}

// handle dispatches a frame read, and reports false when the server broke
// the protocol (the link then ends).
func (r *linkReader) handle(f Frame) bool {
	if err := r.dispatch(f); err != nil {
		r.protocolFailure(err)
		return false
	}
	r.l.wake.dispatched()
	return true
}

// dispatch routes one frame: heartbeats are only counted (by readTracker),
// channel 0 is the connection's, channel N goes to its channel's reader.
func (r *linkReader) dispatch(f Frame) error {
	if f.Type == FrameHeartbeat {
		if f.Channel != 0 {
			return &Error{Code: CodeCommandInvalid, Reason: fmt.Sprintf("heartbeat frame on channel %d", f.Channel), Connection: true}
		}
		return nil // its arrival already counted in lastRead
	}
	l := r.l
	if f.Channel == 0 {
		if f.Type != FrameMethod {
			return &Error{Code: CodeCommandInvalid, Reason: fmt.Sprintf("%s frame on channel 0", f.Type), Connection: true}
		}
		m, err := DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		return r.connectionMethod(m)
	}
	ch := l.c.channel(f.Channel)
	if ch == nil || ch.link.Load() != l {
		// A frame for a channel we closed may still arrive; anything else on
		// an unknown channel is the server's error, but not worth dying for.
		// The late close-ok of a retired number makes it usable again.
		if f.Type == FrameMethod && len(f.Payload) >= 4 &&
			keyOf(binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])) == keyChannelCloseOk {
			l.c.chMu.Lock()
			delete(l.reserved, f.Channel)
			l.c.chMu.Unlock()
		}
		return nil
	}
	return ch.reader.handleFrame(f, &r.strings)
}

// connectionMethod handles a method on channel 0: the server's close,
// blocking, and replies to the connection's own calls.
func (r *linkReader) connectionMethod(m Method) error {
	l := r.l
	switch m := m.(type) {
	case *ConnectionClose:
		// Answer, then end: the close-ok is flushed by shutdown.
		var cause error = &Error{Code: m.ReplyCode, Reason: m.ReplyText, ClassID: m.FailingClassID, MethodID: m.FailingMethodID,
			Server: true, Connection: true}
		l.knownCause.Store(&cause)
		_ = l.w.appendFrames(func(b []byte) ([]byte, error) {
			return appendMethodFrame(b, 0, &ConnectionCloseOk{})
		})
		l.shutdown(cause)
		return nil
	case *ConnectionBlocked:
		l.c.block(m.Reason)
		return nil
	case *ConnectionUnblocked:
		l.c.unblock()
		return nil
	}
	if isReplyKey(m.key()) {
		return l.ch0.complete(m, nil)
	}
	return &Error{Code: CodeCommandInvalid, Reason: "unexpected " + m.MethodName() + " on channel 0", Connection: true}
}

// readFailed ends the link after a failed read: a frame our limits refuse
// is the server's protocol error, the end of the socket after Close is the
// close, anything else a lost connection.
func (r *linkReader) readFailed(err error) {
	l := r.l
	switch {
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrMalformedFrame):
		r.protocolFailure(err)
		return
	case l.c.closeRequested() && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)):
		l.shutdown(ErrClosed)
		return
	}
	l.shutdown(fmt.Errorf("%w: read: %w", ErrConnectionLost, err))
}

// protocolFailure ends the link because the server broke the protocol (or
// sent what our limits refuse): tell the server why with connection.close,
// then shut down without waiting for its close-ok.
func (r *linkReader) protocolFailure(err error) {
	l := r.l
	var amqpErr *Error
	code := CodeFrameError
	switch {
	case errors.As(err, &amqpErr):
		code = amqpErr.Code
	case errors.Is(err, ErrUnknownMethod), errors.Is(err, ErrMalformedFrame):
		code = CodeSyntaxError
	}
	reason := err.Error()
	if len(reason) > maxShortstr {
		reason = reason[:maxShortstr]
	}
	if amqpErr == nil {
		err = fmt.Errorf("%w (sent connection.close %d %s)", err, uint16(code), code)
	}
	err = &peerProtocolError{err: err}
	l.knownCause.Store(&err)
	_ = l.w.appendFrames(func(b []byte) ([]byte, error) {
		return appendMethodFrame(b, 0, &ConnectionClose{ReplyCode: code, ReplyText: reason})
	})
	l.shutdown(err)
}
