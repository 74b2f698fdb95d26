package amqptest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/amqp-go/amqp"
)

// Handshake runs the server's side of the opening handshake as
// [Options] configure it: it reads the protocol header, sends
// connection.start, reads start-ok (checking it with CheckAuth), sends
// connection.tune, reads tune-ok (checking it against the proposal), reads
// connection.open (checking the vhost with CheckVhost) and sends open-ok.
//
// The server runs it by itself for every connection unless
// Options.ManualHandshake is set; a test with a manual handshake may call it
// when it is ready, or script its own handshake from the same pieces.
//
// A client that sends another protocol header gets the server's
// ([amqp.ProtocolHeader]) back and the socket closes, as the specification
// asks. Refusals close the connection as Options describe. The error says
// what went wrong and wraps what CheckAuth or CheckVhost returned.
func (c *Conn) Handshake(ctx context.Context) error {
	err := c.handshake(ctx)
	if err != nil {
		c.srv.logf("conn %d: handshake failed: %v", c.id, err)
		return fmt.Errorf("amqptest: handshake: %w", err)
	}
	c.srv.logf("conn %d: handshake done", c.id)
	return nil
}

func (c *Conn) handshake(ctx context.Context) error {
	o := &c.srv.opts
	hdr, err := c.ReadProtocolHeader(ctx)
	if err != nil {
		return fmt.Errorf("reading the protocol header: %w", err)
	}
	if hdr != amqp.ProtocolHeader {
		_ = c.WriteRaw(ctx, amqp.ProtocolHeader[:])
		c.Drop()
		return fmt.Errorf("the client sent protocol header %q, want %q", hdr[:], amqp.ProtocolHeader[:])
	}

	mechanisms := o.mechanisms()
	if err := c.Send(ctx, 0, &amqp.ConnectionStart{
		VersionMajor:     0,
		VersionMinor:     9,
		ServerProperties: o.ServerProperties,
		Mechanisms:       mechanisms,
		Locales:          o.locales(),
	}); err != nil {
		return err
	}
	startOk, err := handshakeRead[*amqp.ConnectionStartOk](ctx, c)
	if err != nil {
		return err
	}
	if !slices.Contains(strings.Fields(mechanisms), startOk.Mechanism) {
		text := fmt.Sprintf("COMMAND_INVALID - unknown authentication mechanism '%s'", startOk.Mechanism)
		_ = c.CloseConnection(ctx, amqp.CodeCommandInvalid, text, nil)
		return fmt.Errorf("the client chose mechanism %q, not one of %q", startOk.Mechanism, mechanisms)
	}
	if o.CheckAuth != nil {
		if err := o.CheckAuth(startOk.Mechanism, startOk.Response); err != nil {
			if caps, _ := startOk.ClientProperties["capabilities"].(amqp.Table); caps["authentication_failure_close"] == true {
				_ = c.CloseConnection(ctx, amqp.CodeAccessRefused, "ACCESS_REFUSED - "+err.Error(), nil)
			} else {
				c.Drop()
			}
			return fmt.Errorf("login refused: %w", err)
		}
	}

	proposed := &amqp.ConnectionTune{ChannelMax: o.channelMax(), FrameMax: o.frameMax(), Heartbeat: o.Heartbeat}
	if err := c.Send(ctx, 0, proposed); err != nil {
		return err
	}
	tuneOk, err := handshakeRead[*amqp.ConnectionTuneOk](ctx, c)
	if err != nil {
		return err
	}
	if text := checkTune(proposed, tuneOk); text != "" {
		_ = c.CloseConnection(ctx, amqp.CodeNotAllowed, "NOT_ALLOWED - "+text, nil)
		return errors.New(text)
	}

	open, err := handshakeRead[*amqp.ConnectionOpen](ctx, c)
	if err != nil {
		return err
	}
	if o.CheckVhost != nil {
		if err := o.CheckVhost(open.VirtualHost); err != nil {
			_ = c.CloseConnection(ctx, amqp.CodeNotAllowed, "NOT_ALLOWED - "+err.Error(), open)
			return fmt.Errorf("vhost %q refused: %w", open.VirtualHost, err)
		}
	}
	return c.Send(ctx, 0, &amqp.ConnectionOpenOk{})
}

// checkTune validates tune-ok the way RabbitMQ does and returns what is
// wrong with it, or "".
func checkTune(proposed *amqp.ConnectionTune, ok *amqp.ConnectionTuneOk) string {
	switch {
	case ok.FrameMax != 0 && ok.FrameMax < amqp.MinFrameSize:
		return fmt.Sprintf("frame_max=%d < %d min size", ok.FrameMax, amqp.MinFrameSize)
	case proposed.FrameMax != 0 && (ok.FrameMax == 0 || ok.FrameMax > proposed.FrameMax):
		return fmt.Sprintf("frame_max=%d > %d max size", ok.FrameMax, proposed.FrameMax)
	case proposed.ChannelMax != 0 && (ok.ChannelMax == 0 || ok.ChannelMax > proposed.ChannelMax):
		return fmt.Sprintf("negotiated channel_max = %d is higher than the maximum allowed value (%d)",
			ok.ChannelMax, proposed.ChannelMax)
	}
	return ""
}

// handshakeRead reads the next command, which must be an M on channel 0.
func handshakeRead[M amqp.Method](ctx context.Context, c *Conn) (M, error) {
	var zero M
	want := methodName[M]()
	cmd, err := c.ReadCommand(ctx)
	if err != nil {
		return zero, fmt.Errorf("waiting for %s: %w", want, err)
	}
	if m, ok := cmd.Method.(M); ok && cmd.Channel == 0 {
		return m, nil
	}
	if cl, ok := cmd.Method.(*amqp.ConnectionClose); ok && cmd.Channel == 0 {
		_ = c.Send(ctx, 0, &amqp.ConnectionCloseOk{})
		c.Drop()
		return zero, fmt.Errorf("the client closed the connection instead of sending %s: %d %s",
			want, cl.ReplyCode, cl.ReplyText)
	}
	text := fmt.Sprintf("COMMAND_INVALID - expected %s, got %s on channel %d", want, cmd.Method.MethodName(), cmd.Channel)
	_ = c.CloseConnection(ctx, amqp.CodeCommandInvalid, text, cmd.Method)
	return zero, fmt.Errorf("expected %s, got %v", want, cmd)
}

// methodName is M's specification name, or "a method" for amqp.Method itself.
func methodName[M amqp.Method]() string {
	var zero M
	if any(zero) == nil {
		return "a method"
	}
	return zero.MethodName() // the generated methods do not dereference their receiver
}

// Credentials returns the user name and password in the response of a
// connection.start-ok for the PLAIN or AMQPLAIN mechanism, for use in
// Options.CheckAuth:
//
//	CheckAuth: func(mechanism, response string) error {
//		user, pass, err := amqptest.Credentials(mechanism, response)
//		if err != nil || user != "alice" || pass != "secret" {
//			return errors.New("Login was refused using authentication mechanism " + mechanism)
//		}
//		return nil
//	}
func Credentials(mechanism, response string) (username, password string, err error) {
	switch mechanism {
	case "PLAIN":
		// [authzid] NUL authcid NUL passwd (RFC 4616)
		parts := strings.Split(response, "\x00")
		if len(parts) != 3 {
			return "", "", errors.New("amqptest: malformed PLAIN response")
		}
		return parts[1], parts[2], nil
	case "AMQPLAIN":
		// A field table without its length prefix, with LOGIN and PASSWORD.
		// Decode it with the codec, as the client properties of a start-ok.
		payload := binary.BigEndian.AppendUint16(nil, 10)    // connection
		payload = binary.BigEndian.AppendUint16(payload, 11) // start-ok
		payload = binary.BigEndian.AppendUint32(payload, uint32(len(response)))
		payload = append(payload, response...)
		payload = append(payload, 0, 0, 0, 0, 0, 0) // mechanism, response, locale: empty
		m, err := amqp.DecodeMethod(payload)
		if err != nil {
			return "", "", fmt.Errorf("amqptest: malformed AMQPLAIN response: %w", err)
		}
		t := m.(*amqp.ConnectionStartOk).ClientProperties
		username, ok1 := t["LOGIN"].(string)
		password, ok2 := t["PASSWORD"].(string)
		if !ok1 || !ok2 {
			return "", "", errors.New("amqptest: AMQPLAIN response without LOGIN and PASSWORD strings")
		}
		return username, password, nil
	}
	return "", "", fmt.Errorf("amqptest: no credentials in a %q response", mechanism)
}
