package amqp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrProtocolVersion reports that the server does not speak AMQP 0-9-1: it
// answered the protocol header with its own (see [ProtocolVersionError]).
var ErrProtocolVersion = errors.New("amqp: server does not support AMQP 0-9-1")

// ProtocolVersionError reports the protocol header a server sent back
// instead of connection.start. It matches ErrProtocolVersion.
type ProtocolVersionError struct {
	Header [8]byte // what the server sent, e.g. "AMQP\x00\x00\x09\x01" or "AMQP\x01\x01\x00\x0a"
}

func (e *ProtocolVersionError) Error() string {
	return fmt.Sprintf("amqp: server does not support AMQP 0-9-1; it offered protocol header %q", e.Header[:])
}

func (e *ProtocolVersionError) Is(target error) bool { return target == ErrProtocolVersion }

// ErrAuthentication reports that the server closed the connection during
// the handshake without saying why, which is how brokers that do not offer
// authentication_failure_close refuse credentials.
var ErrAuthentication = errors.New("amqp: server closed the connection during authentication (bad credentials?)")

// maxSecureRounds bounds connection.secure challenges, so a server cannot
// hold a dial in the handshake forever.
const maxSecureRounds = 16

// handshake runs the opening of the connection on the raw socket, before any
// of the connection's goroutines exist: protocol header, start/start-ok,
// secure/secure-ok rounds, tune/tune-ok, open/open-ok.
func (l *link) handshake(ctx context.Context) error {
	if _, err := l.conn.Write(ProtocolHeader[:]); err != nil {
		return fmt.Errorf("amqp: sending protocol header: %w", err)
	}
	if err := l.checkProtocolHeaderReply(); err != nil {
		return err
	}

	start, err := expectMethod[*ConnectionStart](l, "connection.start")
	if err != nil {
		return err
	}
	if start.VersionMajor != 0 || start.VersionMinor != 9 {
		return fmt.Errorf("%w: server speaks %d-%d", ErrProtocolVersion, start.VersionMajor, start.VersionMinor)
	}
	l.serverProperties = start.ServerProperties
	mech, err := pickMechanism(start.Mechanisms, l.c.mechanisms())
	if err != nil {
		return err
	}
	response, next, err := mech.Start(ctx)
	if err != nil {
		return fmt.Errorf("amqp: %s authentication: %w", mech.Name(), err)
	}
	if err := l.writeHandshakeMethod(&ConnectionStartOk{
		ClientProperties: l.c.cfg.clientProperties(),
		Mechanism:        mech.Name(),
		Response:         string(response),
		Locale:           l.c.cfg.Locale,
	}); err != nil {
		return err
	}

	var tune *ConnectionTune
	for rounds := 0; tune == nil; rounds++ {
		if rounds > maxSecureRounds {
			return fmt.Errorf("amqp: %s authentication: server sent more than %d connection.secure challenges", mech.Name(), maxSecureRounds)
		}
		m, err := l.readHandshakeMethod("connection.tune")
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *ConnectionSecure:
			if next == nil {
				return fmt.Errorf("amqp: server sent a connection.secure challenge, which %s does not expect", mech.Name())
			}
			response, err := next(ctx, []byte(m.Challenge))
			if err != nil {
				return fmt.Errorf("amqp: %s authentication: %w", mech.Name(), err)
			}
			if err := l.writeHandshakeMethod(&ConnectionSecureOk{Response: string(response)}); err != nil {
				return err
			}
		case *ConnectionTune:
			tune = m
		default:
			return unexpectedHandshakeMethod(m, "connection.tune")
		}
	}

	tuned, err := l.c.cfg.negotiate(tune.ChannelMax, tune.FrameMax, tune.Heartbeat)
	if err != nil {
		return err
	}
	l.channelMax, l.frameMax = tuned.channelMax, tuned.frameMax
	l.heartbeat = time.Duration(tuned.heartbeat) * time.Second
	if err := l.writeHandshakeMethod(&ConnectionTuneOk{
		ChannelMax: tuned.channelMax,
		FrameMax:   tuned.frameMax,
		Heartbeat:  tuned.heartbeat,
	}); err != nil {
		return err
	}
	l.fr.SetMaxFrameSize(l.frameMax)

	if err := l.writeHandshakeMethod(&ConnectionOpen{VirtualHost: l.c.cfg.Vhost}); err != nil {
		return err
	}
	if _, err := expectMethod[*ConnectionOpenOk](l, "connection.open-ok"); err != nil {
		return err
	}
	return nil
}

// checkProtocolHeaderReply catches a server that answers our protocol header
// with its own: it does not speak 0-9-1 and is about to close the socket.
func (l *link) checkProtocolHeaderReply() error {
	b, err := l.fr.peek(4)
	if err != nil {
		return handshakeReadError(err, "connection.start")
	}
	if !bytes.Equal(b, []byte("AMQP")) {
		return nil
	}
	var perr ProtocolVersionError
	b, err = l.fr.peek(len(perr.Header))
	if err != nil {
		return handshakeReadError(err, "connection.start")
	}
	copy(perr.Header[:], b)
	return &perr
}

func (l *link) writeHandshakeMethod(m Method) error {
	buf, err := appendMethodFrame(nil, 0, m)
	if err != nil {
		return err
	}
	if _, err := l.conn.Write(buf); err != nil {
		return fmt.Errorf("sending %s: %w", m.MethodName(), err)
	}
	return nil
}

// readHandshakeMethod reads the next method on channel 0. A connection.close
// from the server (such as 403 ACCESS_REFUSED or 530 NOT_ALLOWED) comes back
// as its *Error after the close-ok is sent.
func (l *link) readHandshakeMethod(want string) (Method, error) {
	for {
		f, err := l.fr.ReadFrame()
		if err != nil {
			return nil, handshakeReadError(err, want)
		}
		if f.Type == FrameHeartbeat {
			continue
		}
		if f.Type != FrameMethod || f.Channel != 0 {
			return nil, fmt.Errorf("%w: %s frame on channel %d while waiting for %s", ErrMalformedFrame, f.Type, f.Channel, want)
		}
		m, err := DecodeMethod(f.Payload)
		if err != nil {
			return nil, err
		}
		if cl, ok := m.(*ConnectionClose); ok {
			_ = l.writeHandshakeMethod(&ConnectionCloseOk{})
			return nil, &Error{Code: cl.ReplyCode, Reason: cl.ReplyText, ClassID: cl.FailingClassID, MethodID: cl.FailingMethodID,
				Server: true, Connection: true}
		}
		return m, nil
	}
}

func expectMethod[M Method](l *link, want string) (M, error) {
	m, err := l.readHandshakeMethod(want)
	if err != nil {
		var zero M
		return zero, err
	}
	typed, ok := m.(M)
	if !ok {
		return typed, unexpectedHandshakeMethod(m, want)
	}
	return typed, nil
}

func unexpectedHandshakeMethod(m Method, want string) error {
	return &Error{Code: CodeCommandInvalid, Reason: fmt.Sprintf("server sent %s while the client waited for %s", m.MethodName(), want),
		Connection: true}
}

// handshakeReadError explains an EOF during the handshake: after start-ok it
// is most likely a refused login from a broker without authentication_failure_close.
func handshakeReadError(err error, want string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if want == "connection.tune" {
			return fmt.Errorf("%w: %w", ErrAuthentication, err)
		}
		return fmt.Errorf("amqp: server closed the connection while the client waited for %s: %w", want, err)
	}
	return fmt.Errorf("amqp: reading %s: %w", want, err)
}
