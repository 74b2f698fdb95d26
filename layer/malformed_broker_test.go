package layer_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// publishUndecodable publishes, as another client could, a message to queue
// whose headers table nests deeper than the client decodes (RabbitMQ passes
// it through), with a body that is a valid layer message.
func publishUndecodable(t *testing.T, queue string) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	s, err := amqpraw.DialURL(ctx, brokerURL())
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Handshake(ctx, amqpraw.Handshake{}))
	require.NoError(t, s.OpenChannel(ctx, 1))
	var inner []byte
	for range 70 {
		inner = append(binary.BigEndian.AppendUint32([]byte{1, 'n', 'F'}, uint32(len(inner))), inner...)
	}
	props := append(binary.BigEndian.AppendUint32([]byte{0x20, 0x00}, uint32(len(inner))), inner...)
	body := []byte{0x81, 0xA4, 't', 'y', 'p', 'e', 0xA4, 'p', 'o', 'i', 's'} // msgpack {"type": "pois"}
	header := binary.BigEndian.AppendUint16(nil, 60)
	header = binary.BigEndian.AppendUint16(header, 0)
	header = binary.BigEndian.AppendUint64(header, uint64(len(body)))
	header = append(header, props...)
	require.NoError(t, s.Send(ctx, 1, &amqp.BasicPublish{RoutingKey: queue}))
	require.NoError(t, s.SendFrame(ctx, amqp.FrameHeader, 1, header))
	require.NoError(t, s.SendBody(ctx, 1, body))
	// A round trip after the publish: the broker has routed it.
	_, err = amqpraw.Call[*amqp.QueueDeclareOk](ctx, s, 1, &amqp.QueueDeclare{Queue: queue, Passive: true})
	require.NoError(t, err)
}

// A message whose content header the client cannot decode is taken and
// reported as a MessageError; the next message is received as usual.
func TestReceiveReportsAnUndecodableMessageAndGoesOn(t *testing.T) {
	for _, try := range []bool{false, true} {
		t.Run(fmt.Sprintf("try=%t", try), func(t *testing.T) {
			ctx := ctxFor(t, 30*time.Second)
			ns := fmt.Sprintf("malformed%d", time.Now().UnixNano())
			l := newLayer(t, layer.Config{Namespace: ns})
			channel := "poisoned"
			// Declares the channel's queue, so the foreign message has somewhere to go.
			require.NoError(t, l.Send(ctx, channel, layer.Message{"type": "first"}))
			_, msg, err := l.Receive(ctx, channel)
			require.NoError(t, err)
			require.Equal(t, "first", msg["type"])

			publishUndecodable(t, ns+":channel:"+channel)
			require.NoError(t, l.Send(ctx, channel, layer.Message{"type": "good"}))

			receive := func() (string, layer.Message, error) {
				if !try {
					return l.Receive(ctx, channel)
				}
				c, m, ok, err := l.TryReceive(ctx, channel)
				require.True(t, ok)
				return c, m, err
			}
			c, _, err := receive()
			var me *layer.MessageError
			require.True(t, errors.As(err, &me), "got %v", err)
			require.Equal(t, channel, c)
			require.ErrorIs(t, err, amqp.ErrMalformedContent)

			c, msg, err = receive()
			require.NoError(t, err, "the layer goes on")
			require.Equal(t, channel, c)
			require.Equal(t, "good", msg["type"])
		})
	}
}
