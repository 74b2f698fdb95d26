package amqpraw_test

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
	"github.com/stretchr/testify/require"
)

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// session opens a raw session to the test broker with the handshake done.
func session(t *testing.T) (context.Context, *amqpraw.Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	s, err := amqpraw.DialURL(ctx, brokerURL())
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no broker at %s: %v", brokerURL(), err)
		}
		t.Skipf("no broker at %s: %v", brokerURL(), err)
	}
	t.Cleanup(func() { s.Close() })
	require.NoError(t, s.Handshake(ctx, amqpraw.Handshake{}))
	require.NotNil(t, s.Start)
	require.NotZero(t, s.Tune.FrameMax)
	return ctx, s
}

func TestSessionDeclaresPublishesAndGets(t *testing.T) {
	ctx, s := session(t)
	require.NoError(t, s.OpenChannel(ctx, 1))
	ok, err := amqpraw.Call[*amqp.QueueDeclareOk](ctx, s, 1, &amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	require.NotEmpty(t, ok.Queue)
	body := make([]byte, 3*int(s.FrameMax)) // several body frames
	body[0], body[len(body)-1] = 'a', 'z'
	require.NoError(t, s.SendContent(ctx, 1, &amqp.BasicPublish{RoutingKey: ok.Queue}, amqp.Properties{MessageID: "m1"}, body))
	require.NoError(t, s.Send(ctx, 1, &amqp.BasicGet{Queue: ok.Queue, NoAck: true}))
	cmd, err := amqpraw.ExpectCommand[*amqp.BasicGetOk](ctx, s, 1)
	require.NoError(t, err)
	require.Equal(t, body, cmd.Body)
	require.Equal(t, "m1", cmd.Properties.MessageID)
	require.Positive(t, s.Received())
	require.NotEmpty(t, s.Transcript())
}

func TestExpectReportsWhatTheBrokerDidInstead(t *testing.T) {
	ctx, s := session(t)
	require.NoError(t, s.OpenChannel(ctx, 1))
	_, err := amqpraw.Call[*amqp.QueueDeclareOk](ctx, s, 1, &amqp.QueueDeclare{Queue: "amqpraw-no-such-queue", Passive: true})
	var ue *amqpraw.UnexpectedError
	require.ErrorAs(t, err, &ue)
	require.Contains(t, ue.Got, "channel.close 404 NOT_FOUND")
	require.IsType(t, &amqp.ChannelClose{}, ue.Method)
	// The close was not answered by Call; the channel stays closing until close-ok.
	require.NoError(t, s.Send(ctx, 1, &amqp.ChannelCloseOk{}))
	require.NoError(t, s.OpenChannel(ctx, 1))
}

func TestExpectIsBoundedByItsContext(t *testing.T) {
	ctx, s := session(t)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := amqpraw.Expect[*amqp.ChannelOpenOk](short, s, 1) // nothing was asked
	var ue *amqpraw.UnexpectedError
	require.ErrorAs(t, err, &ue)
	require.Contains(t, ue.Got, "nothing within")
	// The session is still usable after a timed-out read.
	require.NoError(t, s.OpenChannel(ctx, 1))
}

func TestBadFrameEndIsAFrameError(t *testing.T) {
	ctx, s := session(t)
	payload, err := amqpraw.MethodPayload(&amqp.ChannelOpen{})
	require.NoError(t, err)
	require.NoError(t, s.WriteRaw(ctx, amqpraw.AppendFrame(nil, amqp.FrameMethod, 1, payload, 0x00)))
	_, err = s.ExpectConnectionClose(ctx, amqp.CodeFrameError)
	require.NoError(t, err)
	require.NoError(t, s.ExpectClosed(ctx))
}

func TestBrokerRefusesAnotherProtocolWithItsHeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := amqpraw.DialURL(ctx, brokerURL())
	if err != nil {
		t.Skipf("no broker: %v", err)
	}
	defer s.Close()
	require.NoError(t, s.SendProtocolHeader(ctx, [8]byte{'A', 'M', 'Q', 'P', 0, 2, 0, 0}))
	h, err := s.ExpectProtocolHeader(ctx)
	require.NoError(t, err)
	require.Equal(t, amqp.ProtocolHeader, h)
	require.NoError(t, s.ExpectClosed(ctx))
	_, err = s.ReadFrame(ctx)
	require.True(t, errors.Is(err, amqpraw.ErrClosedByPeer) || errors.Is(err, net.ErrClosed), "%v", err)
}
