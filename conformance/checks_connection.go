package conformance

import (
	"bytes"
	"errors"
	"slices"
	"strings"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// The rules of the connection and channel classes, and of the domains.

// refusedHeader sends a protocol header and expects the broker's own, then
// the socket closed.
func (t *T) refusedHeader(sent [8]byte) [8]byte {
	s := t.Dial()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendProtocolHeader(ctx, sent), "protocol header")
	h, err := s.ExpectProtocolHeader(ctx)
	if err != nil {
		t.Fail("after the header %q: %v", sent[:], brief(err))
	}
	if string(h[:4]) != "AMQP" {
		t.Fail("after the header %q: the broker's header %q is not a valid protocol header", sent[:], h[:])
	}
	if err := s.ExpectClosed(ctx); err != nil {
		t.Fail("after its protocol header %q: %v", h[:], brief(err))
	}
	return h
}

var _ = register("connection.start/protocol-name", func(t *T) {
	h := t.refusedHeader([8]byte{'H', 'T', 'T', 'P', '/', '1', '.', '1'})
	t.Pass("\"HTTP/1.1\": the broker answered %q and closed the socket", h[:])
})

var _ = register("connection.start/server-support", func(t *T) {
	sent := [8]byte{'A', 'M', 'Q', 'P', 0, 2, 0, 0} // version 2.0
	h := t.refusedHeader(sent)
	if bytes.Compare(h[5:], sent[5:]) > 0 {
		t.Fail("asked for 2.0, the broker offered %d-%d-%d, a higher version", h[5], h[6], h[7])
	}
	t.Pass("asked for 2.0, the broker offered %d-%d-%d and closed the socket", h[5], h[6], h[7])
})

var _ = register("connection.start.server-properties/required-fields", func(t *T) {
	s := t.Open()
	var missing []string
	for _, f := range []string{"host", "product", "version", "platform", "copyright", "information"} {
		if _, ok := s.Start.ServerProperties[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		t.Fail("server-properties lack %s", strings.Join(missing, ", "))
	}
	t.Pass("server-properties have host, product, version, platform, copyright and information")
})

var _ = register("connection.start.locales/required-support", func(t *T) {
	s := t.Open()
	if !slices.Contains(strings.Fields(s.Start.Locales), "en_US") {
		t.Fail("locales %q do not include en_US", s.Start.Locales)
	}
	t.Pass("locales %q", s.Start.Locales)
})

var _ = register("connection.start-ok.mechanism/validity", func(t *T) {
	s := t.Dial()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendProtocolHeader(ctx, amqp.ProtocolHeader), "protocol header")
	if _, err := amqpraw.Expect[*amqp.ConnectionStart](ctx, s, 0); err != nil {
		t.Fail("connection.start: %v", brief(err))
	}
	t.Must(s.Send(ctx, 0, &amqp.ConnectionStartOk{ClientProperties: amqpraw.DefaultClientProperties(),
		Mechanism: "NO-SUCH-MECHANISM", Response: "x", Locale: "en_US"}), "start-ok")
	if err := s.ExpectClosed(ctx); err != nil {
		t.Fail("mechanism NO-SUCH-MECHANISM: %v", brief(err))
	}
	t.Pass("mechanism NO-SUCH-MECHANISM: the broker closed the socket without a word")
})

var _ = register("connection.tune.frame-max/minimum", func(t *T) {
	// A start-ok frame of exactly frame-min-size octets, before tuning.
	props := amqpraw.DefaultClientProperties()
	props["padding"] = ""
	probe, err := amqp.AppendMethodFrame(nil, 0, &amqp.ConnectionStartOk{ClientProperties: props, Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	t.Must(err, "encoding start-ok")
	h := t.run.handshake
	response := "\x00" + first(h.Username, "guest") + "\x00" + first(h.Password, "guest")
	pad := amqp.MinFrameSize - len(probe) - (len(response) - len("\x00guest\x00guest"))
	if pad < 0 {
		t.Skip("the credentials alone make start-ok longer than %d octets", amqp.MinFrameSize)
	}
	props["padding"] = strings.Repeat("x", pad)
	s := t.OpenWith(amqpraw.Handshake{ClientProperties: props})
	t.Pass("a start-ok frame of %d octets was accepted: connection.tune and open-ok followed", amqp.MinFrameSize)
	_ = s
})

// tuneRefused runs a handshake with tune-ok changed by tuneOk and passes
// when the broker closes the connection without the close handshake.
func (t *T) tuneRefused(what string, tuneOk func(*amqp.ConnectionTune) *amqp.ConnectionTuneOk) {
	s := t.Dial()
	ctx, cancel := t.step()
	defer cancel()
	err := s.Handshake(ctx, amqpraw.Handshake{TuneOk: tuneOk})
	var ue *amqpraw.UnexpectedError
	switch {
	case err == nil:
		t.Fail("%s: the broker opened the connection", what)
	case !errors.As(err, &ue):
		t.Fail("%s: %v", what, err)
	case ue.Got == "the broker closed the connection":
		t.Pass("%s: the broker closed the socket", what)
	}
	if c, ok := ue.Method.(*amqp.ConnectionClose); ok {
		_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
		t.Fail("%s: the broker used the close handshake (connection.close %d %s), not a bare socket close", what, c.ReplyCode, c.ReplyText)
	}
	t.Fail("%s: %s", what, brief(err))
}

var _ = register("connection.tune-ok.channel-max/upper-limit", func(t *T) {
	var proposed uint16
	t.tuneRefused("tune-ok with channel_max over the broker's", func(tune *amqp.ConnectionTune) *amqp.ConnectionTuneOk {
		proposed = tune.ChannelMax
		if proposed == 0 || proposed == 65535 {
			t.Skip("the broker proposes channel_max %d: no higher value to ask for", proposed)
		}
		return &amqp.ConnectionTuneOk{ChannelMax: proposed + 1, FrameMax: tune.FrameMax}
	})
})

var _ = register("connection.tune-ok.frame-max/upper-limit", func(t *T) {
	t.tuneRefused("tune-ok with frame_max over the broker's", func(tune *amqp.ConnectionTune) *amqp.ConnectionTuneOk {
		if tune.FrameMax == 0 || tune.FrameMax == 1<<32-1 {
			t.Skip("the broker proposes frame_max %d: no higher value to ask for", tune.FrameMax)
		}
		return &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax + 1}
	})
})

var _ = register("connection.tune-ok.frame-max/minimum", func(t *T) {
	t.tuneRefused("tune-ok with frame_max 1024, under frame-min-size", func(tune *amqp.ConnectionTune) *amqp.ConnectionTuneOk {
		return &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: 1024}
	})
})

var _ = register("connection.open.virtual-host/security", func(t *T) {
	s := t.Dial()
	ctx, cancel := t.step()
	defer cancel()
	vhost := t.run.prefix + "-no-such-vhost"
	err := s.Handshake(ctx, amqpraw.Handshake{Vhost: vhost})
	var ue *amqpraw.UnexpectedError
	switch {
	case err == nil:
		t.Fail("the broker opened virtual host %q, which does not exist", vhost)
	case errors.As(err, &ue) && ue.Method != nil:
		if c, ok := ue.Method.(*amqp.ConnectionClose); ok {
			_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
			t.Pass("connection.open of an unknown virtual host: connection.close %d %s", c.ReplyCode, c.ReplyText)
		}
	case errors.As(err, &ue) && ue.Got == "the broker closed the connection":
		t.Pass("connection.open of an unknown virtual host: the broker closed the socket")
	}
	t.Fail("connection.open of an unknown virtual host: %v", brief(err))
})

var _ = register("connection.close/stability", func(t *T) {
	s := t.Open()
	ctx, cancel := t.step()
	defer cancel()
	// Make the broker close the connection, then answer with a close of our own.
	t.Must(s.Send(ctx, 9, &amqp.ChannelFlowOk{Active: true}), "channel.flow-ok on an unopened channel")
	c, err := amqpraw.Expect[*amqp.ConnectionClose](ctx, s, 0)
	if err != nil {
		t.Fail("provoking connection.close: %v", brief(err))
	}
	t.Must(s.Send(ctx, 0, &amqp.ConnectionClose{ReplyCode: amqp.CodeSuccess, ReplyText: "crossing close"}), "connection.close")
	if _, err := amqpraw.Expect[*amqp.ConnectionCloseOk](ctx, s, 0); err != nil {
		t.Fail("after its connection.close %d, a connection.close from us: %v", c.ReplyCode, brief(err))
	}
	t.Pass("after its connection.close %d, our connection.close was answered with close-ok", c.ReplyCode)
})

var _ = register("channel.open/state", func(t *T) {
	s, ch := t.Fresh()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.ChannelOpen{}), "channel.open")
	t.expectFatal(s, "channel.open on an open channel", amqp.CodeChannelError)
})

// pauseChannel asks the broker to stop sending content on ch.
func (t *T) pauseChannel(s *amqpraw.Session, ch uint16, what string) {
	ctx, cancel := t.step()
	defer cancel()
	ok, err := amqpraw.Call[*amqp.ChannelFlowOk](ctx, s, ch, &amqp.ChannelFlow{Active: false})
	if err != nil {
		t.Fail("%s: channel.flow active=false: %v", what, brief(err))
	}
	if ok.Active {
		t.Fail("%s: channel.flow active=false answered with flow-ok active=true", what)
	}
}

var _ = register("channel.flow/initial-state", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.pauseChannel(s, ch, "a new channel, paused at once")
	t.Publish(s, ch, "", q, amqp.Properties{}, "m")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q, NoAck: true})
	if cmd := t.Quiet(s); cmd != nil {
		t.Fail("on the paused channel: %v", cmd)
	}
	t.Pass("a new channel paused with channel.flow active=false received nothing")
})

var _ = register("channel.flow/bidirectional", func(t *T) {
	s, ch, q := t.FreshQueue("first")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q, NoAck: true})
	t.Next(s, ch, "the first message")
	t.pauseChannel(s, ch, "while consuming")
	t.Publish(s, ch, "", q, amqp.Properties{}, "second")
	if cmd := t.Quiet(s); cmd != nil {
		t.Fail("after channel.flow active=false: %v", cmd)
	}
	t.Pass("channel.flow active=false answered at once, and no content followed")
})

var _ = register("channel.close/stability", func(t *T) {
	s, ch := t.Fresh()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.QueueDeclare{Queue: t.Name("q"), Passive: true}), "queue.declare")
	c, err := amqpraw.Expect[*amqp.ChannelClose](ctx, s, ch)
	if err != nil {
		t.Fail("provoking channel.close: %v", brief(err))
	}
	// A method the broker must discard, then a crossing close.
	t.Must(s.Send(ctx, ch, &amqp.QueueDeclare{Queue: t.Name("q")}), "queue.declare")
	t.Must(s.Send(ctx, ch, &amqp.ChannelClose{ReplyCode: amqp.CodeSuccess}), "channel.close")
	cmd, err := s.ReadCommand(ctx)
	if err != nil {
		t.Fail("after its channel.close %d, a queue.declare and our channel.close: %v", c.ReplyCode, brief(err))
	}
	if _, ok := cmd.Method.(*amqp.ChannelCloseOk); !ok || cmd.Channel != ch {
		t.Fail("after its channel.close %d, a queue.declare and our channel.close: %v", c.ReplyCode, cmd)
	}
	t.Pass("after its channel.close %d, our queue.declare was discarded and our channel.close answered with close-ok", c.ReplyCode)
})

var _ = register("delivery-tag/channel-local", func(t *T) {
	s, ch := t.Fresh()
	other := t.Channel(s)
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	t.Publish(s, ch, "", q, amqp.Properties{}, "m")
	m := t.GetUnacked(s, ch, q)
	if m == nil {
		t.Fail("basic.get: the queue is empty")
	}
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, other, &amqp.BasicAck{DeliveryTag: deliveryTag(m)}), "basic.ack")
	if c, err := s.ExpectChannelClose(ctx, other, amqp.CodePreconditionFailed); err != nil {
		t.Fail("acknowledging on channel %d a delivery of channel %d: %v", other, ch, brief(err))
	} else {
		t.Pass("acknowledging on channel %d a delivery of channel %d: channel.close %d %s", other, ch, c.ReplyCode, c.ReplyText)
	}
})

var _ = register("delivery-tag/non-zero", func(t *T) {
	s, ch, q := t.FreshQueue()
	for i := range 3 {
		t.Publish(s, ch, "", q, amqp.Properties{}, string(rune('a'+i)))
	}
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	var tags []uint64
	for range 3 {
		tag := deliveryTag(t.Next(s, ch, "a delivery"))
		if tag == 0 {
			t.Fail("a delivery with tag 0")
		}
		tags = append(tags, tag)
	}
	t.Pass("delivery tags %v", tags)
})

var _ = register("redelivered/implementation", func(t *T) {
	s, ch, q := t.FreshQueue("m")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	if redelivered(t.Next(s, ch, "the first delivery")) {
		t.Fail("the first delivery is flagged redelivered")
	}
	closePolitely(t.ctx, s) // without acknowledging
	s2, ch2 := t.Fresh()
	t.Consume(s2, ch2, amqp.BasicConsume{Queue: q})
	if !redelivered(t.Next(s2, ch2, "after reconnecting")) {
		t.Fail("the unacknowledged message came back without the redelivered flag")
	}
	t.Pass("the unacknowledged message came back flagged redelivered")
})
