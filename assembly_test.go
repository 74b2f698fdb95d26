package amqp_test

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Fake-server tests of messages whose content header cannot be decoded
// although their framing is intact: each costs that message, never the
// connection.

func TestMalformedContentHeaderCostsTheMessageNotTheConnection(t *testing.T) {
	for name, tc := range poisonedHeaders {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
			require.NoError(t, sc.WriteRaw(ctx, rawContent(t, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, tc.props, []byte("poison"))))
			require.NoError(t, sc.SendContent(ctx, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, amqp.Properties{MessageID: "good"}, []byte("good")))

			bad, err := cons.Next(ctx)
			require.NotNil(t, bad, "the message reaches the application")
			require.Equal(t, "poison", string(bad.Body), "the body arrives whole")
			require.Equal(t, uint64(1), bad.DeliveryTag)
			if tc.decodes {
				require.NoError(t, err)
				require.NoError(t, bad.Err())
				require.NoError(t, bad.Ack(amqp.AckOptions{}))
				amqptest.Expect[*amqp.BasicAck](t, sc)
			} else {
				require.ErrorIs(t, err, amqp.ErrMalformedContent)
				require.ErrorIs(t, err, amqp.ErrMalformedFrame)
				var ce *amqp.ContentError
				require.ErrorAs(t, err, &ce)
				require.Equal(t, "basic.deliver", ce.Method)
				require.Equal(t, tc.props, ce.Header[12:], "the raw header is kept")
				require.Same(t, ce, bad.Err(), "the delivery carries the same error")
				// The application dead-letters it.
				require.NoError(t, bad.Reject(amqp.RejectOptions{}))
				_, rej := amqptest.Expect[*amqp.BasicReject](t, sc)
				require.Equal(t, amqp.BasicReject{DeliveryTag: 1, Requeue: false}, *rej)
			}

			good, err := cons.Next(ctx)
			require.NoError(t, err, "the consumer goes on")
			require.Equal(t, "good", string(good.Body))
			require.Equal(t, "good", good.MessageID)
			require.NoError(t, cons.Channel().Connection().Err(), "the connection stays open")
			require.Nil(t, cons.Err(), "the consumer stays subscribed")
		})
	}
}

func TestMalformedContentKeepsWhatDecoded(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
	// content-type "json" decodes; the headers table after it does not.
	props := []byte{0xA0, 0x00, 4, 'j', 's', 'o', 'n', 0, 0, 0, 3, 1, 'k', '?'}
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, Exchange: "x", RoutingKey: "rk"}, props, nil)))
	d, err := cons.Next(ctx)
	require.ErrorIs(t, err, amqp.ErrMalformedContent)
	require.Equal(t, "json", d.ContentType)
	require.Equal(t, "x", d.Exchange)
	require.Equal(t, "rk", d.RoutingKey)
	require.Empty(t, d.Body, "a zero-length body completes with the header")
}

// Broken framing is different: without a trustworthy body size the stream
// cannot be resynchronised, so the connection ends with a typed error.
func TestBrokenContentFramingClosesTheConnection(t *testing.T) {
	for name, tc := range map[string]struct {
		raw  func(ch uint16) []byte
		want error
	}{
		"header too short for a body size": {func(ch uint16) []byte {
			b, _ := amqp.AppendMethodFrame(nil, ch, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})
			return append(b, byte(amqp.FrameHeader), 0, byte(ch), 0, 0, 0, 4, 0, 60, 0, 0, 0xCE)
		}, amqp.ErrMalformedFrame},
		"body frame past the announced size": {func(ch uint16) []byte {
			b, _ := amqp.AppendMethodFrame(nil, ch, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})
			b, _ = amqp.AppendHeaderFrame(b, ch, 60, 2, &amqp.Properties{})
			return amqp.AppendBodyFrames(b, ch, []byte("three"), 4096)
		}, amqp.ErrFrameError},
	} {
		t.Run(name, func(t *testing.T) {
			cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
			require.NoError(t, sc.WriteRaw(t.Context(), tc.raw(id)))
			conn := cons.Channel().Connection()
			<-conn.Done()
			require.ErrorIs(t, conn.Err(), tc.want)
			require.NotErrorIs(t, conn.Err(), amqp.ErrMalformedContent)
		})
	}
}

// The timestamp that used to close the connection: 2^63 as the property,
// from the wire through Next to the application.
func TestTimestampBefore1970FromAnotherClient(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
	moon := time.Date(1969, 7, 20, 0, 0, 0, 0, time.UTC)
	props := binary.BigEndian.AppendUint64([]byte{0x00, 0x40}, uint64(moon.Unix()))
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, props, nil)))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, moon, d.Timestamp)

	props = binary.BigEndian.AppendUint64([]byte{0x00, 0x40}, 1<<63)
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, props, nil)))
	d, err = cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(math.MinInt64), d.Timestamp.Unix())
}
