package amqp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

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

// tuneParams are the values a client sends in connection.tune-ok.
type tuneParams struct {
	channelMax uint16
	frameMax   uint32
	heartbeat  uint16 // seconds; 0 disables heartbeats
}

// negotiate applies the Heartbeat, FrameMax and ChannelMax rules documented
// on Config to the server's connection.tune proposal and returns what to
// send in connection.tune-ok. The result never has frameMax 0 (no limit). A
// server frame_max below the protocol minimum is an error.
func (c Config) negotiate(serverChannelMax uint16, serverFrameMax uint32, serverHeartbeat uint16) (tuneParams, error) {
	if serverFrameMax != 0 && serverFrameMax < MinFrameSize {
		return tuneParams{}, fmt.Errorf("amqp: the server proposed frame_max %d, below the protocol minimum %d",
			serverFrameMax, MinFrameSize)
	}
	var t tuneParams

	t.channelMax = negotiateMax(c.ChannelMax, serverChannelMax)
	if t.channelMax == 0 {
		t.channelMax = 65535
	}

	t.frameMax = negotiateMax(c.FrameMax, serverFrameMax)
	if t.frameMax == 0 {
		t.frameMax = defaultFrameMax
	}

	switch {
	case c.Heartbeat < 0:
		t.heartbeat = 0
	case c.Heartbeat == 0:
		t.heartbeat = serverHeartbeat
	default:
		secs := (c.Heartbeat + time.Second - 1) / time.Second
		t.heartbeat = negotiateMax(uint16(min(secs, 65535)), serverHeartbeat)
	}
	return t, nil
}

// negotiateMax returns the smaller of two limits, where 0 means "none".
func negotiateMax[T uint16 | uint32](ours, theirs T) T {
	if ours == 0 {
		return theirs
	}
	if theirs == 0 {
		return ours
	}
	return min(ours, theirs)
}
