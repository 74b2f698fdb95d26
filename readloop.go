package amqp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// readTracker records when the socket last delivered bytes, for the
// heartbeat monitor, at the cost of one atomic store per read system call.
type readTracker struct {
	net.Conn
	last *atomic.Int64
}

func (r readTracker) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// readLoop is the reader goroutine: the only code that reads the socket. It
// decodes each frame and hands it to channel 0 or to its channel; no handler
// it calls blocks on user code.
func (l *link) readLoop() {
	for {
		f, err := l.fr.ReadFrame()
		if err != nil {
			l.readFailed(err)
			return
		}
		if err := l.dispatch(f); err != nil {
			l.protocolFailure(err)
			return
		}
	}
}

func (l *link) dispatch(f Frame) error {
	if f.Type == FrameHeartbeat {
		if f.Channel != 0 {
			return &Error{Code: CodeCommandInvalid, Reason: fmt.Sprintf("heartbeat frame on channel %d", f.Channel), Connection: true}
		}
		return nil // its arrival already counted in lastRead
	}
	if f.Channel == 0 {
		if f.Type != FrameMethod {
			return &Error{Code: CodeCommandInvalid, Reason: fmt.Sprintf("%s frame on channel 0", f.Type), Connection: true}
		}
		m, err := DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		return l.handleConnectionMethod(m)
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
	return ch.handleFrame(l, f)
}

func (l *link) handleConnectionMethod(m Method) error {
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
		l.c.setBlocked(true, m.Reason)
		return nil
	case *ConnectionUnblocked:
		l.c.setBlocked(false, "")
		return nil
	}
	if isReplyKey(m.key()) {
		return l.ch0.complete(m, nil)
	}
	return &Error{Code: CodeCommandInvalid, Reason: "unexpected " + m.MethodName() + " on channel 0", Connection: true}
}

// readFailed ends the link after the reader's error.
func (l *link) readFailed(err error) {
	switch {
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrMalformedFrame):
		l.protocolFailure(err)
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
func (l *link) protocolFailure(err error) {
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
