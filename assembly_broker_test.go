package amqp_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// Broker tests of messages from other clients whose content header this
// client cannot decode: they are published here byte for byte, as another
// client would, on a raw socket with the exported frame codec.

// rawPublisher is a minimal AMQP client on a bare socket: enough handshake
// to publish hand-made frames on channel 1.
type rawPublisher struct {
	nc net.Conn
	fr *amqp.FrameReader
}

func dialRawPublisher(t *testing.T) *rawPublisher {
	t.Helper()
	u, err := url.Parse(brokerURL())
	require.NoError(t, err)
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	nc, err := net.Dial("tcp", host)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	if d, ok := t.Deadline(); ok {
		require.NoError(t, nc.SetDeadline(d))
	}
	p := &rawPublisher{nc: nc, fr: amqp.NewFrameReader(nc)}
	p.fr.SetMaxFrameSize(0)
	pass, _ := u.User.Password()
	vhost := u.Path
	if len(vhost) > 0 {
		vhost = vhost[1:]
	}
	if vhost == "" {
		vhost = "/"
	}
	_, err = nc.Write([]byte("AMQP\x00\x00\x09\x01"))
	require.NoError(t, err)
	p.expect(t, &amqp.ConnectionStart{})
	p.send(t, 0, &amqp.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00" + u.User.Username() + "\x00" + pass, Locale: "en_US"})
	tune := p.expect(t, &amqp.ConnectionTune{}).(*amqp.ConnectionTune)
	p.send(t, 0, &amqp.ConnectionTuneOk{ChannelMax: 1, FrameMax: tune.FrameMax})
	p.send(t, 0, &amqp.ConnectionOpen{VirtualHost: vhost})
	p.expect(t, &amqp.ConnectionOpenOk{})
	p.send(t, 1, &amqp.ChannelOpen{})
	p.expect(t, &amqp.ChannelOpenOk{})
	p.send(t, 1, &amqp.ConfirmSelect{})
	p.expect(t, &amqp.ConfirmSelectOk{})
	return p
}

func (p *rawPublisher) send(t *testing.T, ch uint16, m amqp.Method) {
	t.Helper()
	b, err := amqp.AppendMethodFrame(nil, ch, m)
	require.NoError(t, err)
	_, err = p.nc.Write(b)
	require.NoError(t, err)
}

// expect reads frames until a method arrives, and checks its type.
func (p *rawPublisher) expect(t *testing.T, want amqp.Method) amqp.Method {
	t.Helper()
	for {
		f, err := p.fr.ReadFrame()
		require.NoError(t, err)
		if f.Type != amqp.FrameMethod {
			continue // heartbeats
		}
		m, err := amqp.DecodeMethod(f.Payload)
		require.NoError(t, err)
		require.Equal(t, want.MethodName(), m.MethodName(), "got %+v", m)
		return m
	}
}

// publishRaw publishes a message with the given raw property list to the
// default exchange and waits for the broker's confirm, so the broker has
// accepted it before the test goes on.
func (p *rawPublisher) publishRaw(t *testing.T, queue string, props, body []byte) {
	t.Helper()
	b := rawContent(t, 1, &amqp.BasicPublish{RoutingKey: queue}, props, body)
	_, err := p.nc.Write(b)
	require.NoError(t, err)
	p.expect(t, &amqp.BasicAck{})
}

// Poisons that RabbitMQ 3.10 passes through to consumers although this
// client cannot decode them. (A header table's unknown type tag or a short
// property list RabbitMQ refuses itself, closing the publisher's connection
// with 541, so those are covered by the fake-server tests only;
// TestBrokerRefusesTheOtherPoisons keeps that claim honest.)
var brokerPoisons = map[string][]byte{
	"unused property flag bit": {0x00, 0x02},
	"headers nested 70 deep":   deepHeaders(70),
}

// deepHeaders is a property list whose headers table nests depth tables,
// past the 64 this client decodes.
func deepHeaders(depth int) []byte {
	var inner []byte
	for range depth {
		inner = append(binary.BigEndian.AppendUint32([]byte{1, 'n', 'F'}, uint32(len(inner))), inner...)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0x20, 0x00}, uint32(len(inner))), inner...)
}

// The reproduction from the issue, and the poisons RabbitMQ passes: each
// poisoned message reaches the consumer with a ContentError, is rejected to
// a dead-letter queue, and the good messages around it arrive; the
// connection stays open.
func TestBrokerMalformedContentReachesTheConsumerAndDeadLetters(t *testing.T) {
	needBroker(t)
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	dlq := tempQueue(t, ch, nil)
	q := tempQueue(t, ch, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	require.NoError(t, ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 1}))

	pub := dialRawPublisher(t)
	moon := time.Date(1969, 7, 20, 0, 0, 0, 0, time.UTC)
	// @cloudamqp/amqp-client's timestamp property for a 1969 Date.
	pub.publishRaw(t, q, binary.BigEndian.AppendUint64([]byte{0x00, 0x40}, uint64(moon.Unix())), []byte("1969 property"))
	// 2^63 under 'T' in the headers, as amqplib can write it.
	pub.publishRaw(t, q, append([]byte{0x20, 0x00, 0, 0, 0, 11, 1, 't', 'T'}, 0x80, 0, 0, 0, 0, 0, 0, 0), []byte("2^63 header"))
	for name, props := range brokerPoisons {
		pub.publishRaw(t, q, props, []byte(name))
		pub.publishRaw(t, q, []byte{0x80, 0x00, 4, 'g', 'o', 'o', 'd'}, []byte("good after "+name))
	}

	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	var good, bad []string
	for range 2 + 2*len(brokerPoisons) {
		d, err := cons.Next(ctx)
		require.NotNil(t, d, "every message reaches the consumer: %v", err)
		if err != nil {
			require.ErrorIs(t, err, amqp.ErrMalformedContent)
			var ce *amqp.ContentError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, brokerPoisons[string(d.Body)], ce.Header[12:], "the raw header as the broker delivered it")
			bad = append(bad, string(d.Body))
			require.NoError(t, d.Reject(amqp.RejectOptions{})) // to the dead-letter queue
			continue
		}
		switch string(d.Body) {
		case "1969 property":
			require.Equal(t, moon, d.Timestamp)
		case "2^63 header":
			require.Equal(t, time.Unix(-1<<63, 0).UTC(), d.Headers["t"])
		default:
			require.Equal(t, "good", d.ContentType)
		}
		good = append(good, string(d.Body))
		require.NoError(t, d.Ack(amqp.AckOptions{}))
	}
	require.Len(t, good, 2+len(brokerPoisons))
	require.ElementsMatch(t, mapKeys(brokerPoisons), bad)
	require.NoError(t, conn.Err(), "the connection stays open")
	require.NoError(t, cons.Err(), "the consumer stays subscribed")
	require.Eventually(t, func() bool {
		ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: dlq, Passive: true})
		return err == nil && ok.MessageCount == uint32(len(brokerPoisons))
	}, waitBudget(t), 20*time.Millisecond, "the rejected messages were dead-lettered")
}

// The set-up: manual ack, prefetch 1, recovery on, and a consumer
// that rejects what it cannot decode by itself: only good messages reach
// the application, and the poison goes to the dead-letter queue.
func TestBrokerRejectMalformedConsumerGoesOn(t *testing.T) {
	needBroker(t)
	ctx := testCtx(t)
	cfg, err := amqp.ParseURL(brokerURL())
	require.NoError(t, err)
	cfg.Recovery = &amqp.RecoveryConfig{}
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	ch := openChannel(t, conn)
	dlq := tempQueue(t, ch, nil)
	q := tempQueue(t, ch, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	require.NoError(t, ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 1}))
	pub := dialRawPublisher(t)
	pub.publishRaw(t, q, brokerPoisons["headers nested 70 deep"], []byte("poison"))
	pub.publishRaw(t, q, []byte{0x00, 0x00}, []byte("good"))

	cons, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: q}, amqp.ConsumerOptions{RejectMalformed: true})
	require.NoError(t, err)
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "good", string(d.Body))
	require.NoError(t, d.Ack(amqp.AckOptions{}))
	dead, err := ch.Get(ctx, amqp.BasicGet{Queue: dlq, NoAck: true})
	for errors.Is(err, amqp.ErrEmpty) && ctx.Err() == nil { // the dead-lettering is asynchronous
		time.Sleep(20 * time.Millisecond)
		dead, err = ch.Get(ctx, amqp.BasicGet{Queue: dlq, NoAck: true})
	}
	require.ErrorIs(t, err, amqp.ErrMalformedContent, "still undecodable after dead-lettering")
	require.Equal(t, "poison", string(dead.Body))
	require.NoError(t, conn.Err())
}

// The poisons that RabbitMQ refuses at publish: if a broker version starts
// passing one through, it belongs in brokerPoisons.
func TestBrokerRefusesTheOtherPoisons(t *testing.T) {
	needBroker(t)
	for name, tc := range poisonedHeaders {
		err := probeBrokerAcceptsProps(t, tc.props)
		if tc.decodes {
			require.NoError(t, err, name)
		} else {
			require.ErrorContains(t, err, "connection.close 541", name)
		}
	}
	for name, props := range brokerPoisons {
		require.NoError(t, probeBrokerAcceptsProps(t, props), name)
	}
}

func mapKeys[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// probeBrokerAcceptsProps reports whether the broker takes a publish with
// this raw property list (it confirms it) or refuses it (it closes).
func probeBrokerAcceptsProps(t *testing.T, props []byte) error {
	pub := dialRawPublisher(t)
	b := rawContent(t, 1, &amqp.BasicPublish{RoutingKey: "amq.gen-nowhere"}, props, []byte("x"))
	if _, err := pub.nc.Write(b); err != nil {
		return err
	}
	for {
		f, err := pub.fr.ReadFrame()
		if err != nil {
			return err
		}
		if f.Type != amqp.FrameMethod {
			continue
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *amqp.BasicAck:
			return nil
		case *amqp.ConnectionClose:
			return fmt.Errorf("connection.close %d %s", m.ReplyCode, m.ReplyText)
		case *amqp.ChannelClose:
			return fmt.Errorf("channel.close %d %s", m.ReplyCode, m.ReplyText)
		}
	}
}
