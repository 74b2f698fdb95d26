package amqpraw_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Frame-level tests against amqptest, the fake server: what the session
// makes of a server's frames, including ones a broker rarely sends.

func fakeSession(t *testing.T, opts amqptest.Options) (context.Context, *amqpraw.Session, *amqptest.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	srv := amqptest.NewServer(t, opts)
	nc, err := srv.Dial(ctx, "tcp", "fake")
	require.NoError(t, err)
	s := amqpraw.NewSession(nc, amqpraw.Options{})
	t.Cleanup(func() { s.Close() })
	require.NoError(t, s.Handshake(ctx, amqpraw.Handshake{Vhost: "v"}))
	sc, err := srv.Accept(ctx)
	require.NoError(t, err)
	require.Equal(t, "v", sc.Open().VirtualHost)
	return ctx, s, sc
}

func TestHandshakeRecordsTheNegotiation(t *testing.T) {
	_, s, sc := fakeSession(t, amqptest.Options{ChannelMax: 9, FrameMax: 8192})
	require.Equal(t, uint16(9), s.Tune.ChannelMax)
	require.Equal(t, uint32(8192), s.FrameMax)
	require.Equal(t, "PLAIN", sc.StartOk().Mechanism)
	require.Equal(t, uint32(8192), sc.TuneOk().FrameMax)
}

func TestReadCommandAssemblesContentAcrossFrames(t *testing.T) {
	ctx, s, sc := fakeSession(t, amqptest.Options{FrameMax: amqp.MinFrameSize})
	body := make([]byte, 20000) // five body frames at frame_max 4096
	for i := range body {
		body[i] = byte(i)
	}
	require.NoError(t, sc.SendContent(ctx, 3, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, amqp.Properties{Type: "t"}, body))
	cmd, err := amqpraw.ExpectCommand[*amqp.BasicDeliver](ctx, s, 3)
	require.NoError(t, err)
	require.Equal(t, body, cmd.Body)
	require.Equal(t, "t", cmd.Properties.Type)
}

func TestExpectSaysWhatCameInstead(t *testing.T) {
	ctx, s, sc := fakeSession(t, amqptest.Options{})
	require.NoError(t, sc.Send(ctx, 2, &amqp.ChannelClose{ReplyCode: amqp.CodeNotFound, ReplyText: "NOT_FOUND - gone"}))
	_, err := amqpraw.Expect[*amqp.QueueDeclareOk](ctx, s, 2)
	var ue *amqpraw.UnexpectedError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "queue.declare-ok on channel 2", ue.Want)
	require.Contains(t, ue.Got, "channel.close 404 NOT_FOUND - gone")

	require.NoError(t, sc.Send(ctx, 2, &amqp.ChannelClose{ReplyCode: amqp.CodePreconditionFailed}))
	_, err = s.ExpectChannelClose(ctx, 2, amqp.CodeNotFound)
	require.ErrorAs(t, err, &ue)
	require.Contains(t, ue.Got, "406")
	// ExpectChannelClose answered the close, whatever its code.
	amqptest.Expect[*amqp.ChannelCloseOk](t, sc)
}

func TestContentFramesOutOfPlaceAreUnexpected(t *testing.T) {
	ctx, s, sc := fakeSession(t, amqptest.Options{})
	// A body frame with no method and header before it.
	require.NoError(t, sc.WriteRaw(ctx, amqpraw.AppendFrame(nil, amqp.FrameBody, 1, []byte("x"), amqpraw.FrameEnd)))
	_, err := s.ReadCommand(ctx)
	var ue *amqpraw.UnexpectedError
	require.ErrorAs(t, err, &ue)
	require.Contains(t, ue.Got, "body frame")
}

func TestExpectConnectionCloseThenClosed(t *testing.T) {
	ctx, s, sc := fakeSession(t, amqptest.Options{})
	go sc.CloseConnection(ctx, amqp.CodeInternalError, "INTERNAL_ERROR", nil)
	c, err := s.ExpectConnectionClose(ctx, amqp.CodeInternalError)
	require.NoError(t, err)
	require.Equal(t, "INTERNAL_ERROR", c.ReplyText)
	require.NoError(t, s.ExpectClosed(ctx))
	_, err = s.ReadFrame(ctx)
	require.ErrorIs(t, err, amqpraw.ErrClosedByPeer)
}

func TestMalformedFrameFromTheServerEndsTheSession(t *testing.T) {
	ctx, s, sc := fakeSession(t, amqptest.Options{})
	require.NoError(t, sc.WriteRaw(ctx, amqpraw.AppendFrame(nil, amqp.FrameHeartbeat, 0, nil, 0x00)))
	_, err := s.ReadFrame(ctx)
	require.ErrorIs(t, err, amqp.ErrMalformedFrame)
	_, err = s.ReadFrame(ctx) // sticky
	require.ErrorIs(t, err, amqp.ErrMalformedFrame)
}

func TestContentBodyOverrunIsUnexpected(t *testing.T) {
	ctx, s, sc := fakeSession(t, amqptest.Options{})
	var b []byte
	b, err := amqp.AppendMethodFrame(b, 1, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})
	require.NoError(t, err)
	b, err = amqp.AppendHeaderFrame(b, 1, 60, 2, &amqp.Properties{})
	require.NoError(t, err)
	b = amqpraw.AppendFrame(b, amqp.FrameBody, 1, []byte("12345"), amqpraw.FrameEnd)
	require.NoError(t, sc.WriteRaw(ctx, b))
	_, err = s.ReadCommand(ctx)
	var ue *amqpraw.UnexpectedError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "2 body bytes", ue.Want)
	// The channel starts afresh after the error.
	require.NoError(t, sc.Send(ctx, 1, &amqp.BasicQosOk{}))
	_, err = amqpraw.Expect[*amqp.BasicQosOk](ctx, s, 1)
	require.NoError(t, err)
}
