package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// The frame-level rules of the specification's general part.

// expectFatal passes when the broker ends the connection after a framing
// error: with connection.close carrying one of codes, or (as the spec's
// "close the connection without sending any further data" allows) with a
// bare socket close.
func (t *T) expectFatal(s *amqpraw.Session, what string, codes ...amqp.ReplyCode) {
	ctx, cancel := t.step()
	defer cancel()
	c, err := s.ExpectConnectionClose(ctx, 0)
	var ue *amqpraw.UnexpectedError
	switch {
	case err == nil:
		for _, code := range codes {
			if c.ReplyCode == code {
				t.Pass("%s: connection.close %d %s", what, c.ReplyCode, c.ReplyText)
			}
		}
		t.Fail("%s: connection.close %d %s, want code %v", what, c.ReplyCode, c.ReplyText, codes)
	case errors.As(err, &ue) && ue.Got == "the broker closed the connection":
		t.Pass("%s: the broker closed the socket", what)
	}
	t.Fail("%s: %s", what, brief(err))
}

func (t *T) methodPayload(m amqp.Method) []byte {
	p, err := amqpraw.MethodPayload(m)
	t.Must(err, "encoding "+m.MethodName())
	return p
}

func (t *T) raw(s *amqpraw.Session, b []byte) {
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.WriteRaw(ctx, b), "writing")
}

var _ = register("frame/end-octet", func(t *T) {
	s := t.Open()
	t.raw(s, amqpraw.AppendFrame(nil, amqp.FrameMethod, 1, t.methodPayload(&amqp.ChannelOpen{}), 0x00))
	t.expectFatal(s, "channel.open frame ending in 0x00", amqp.CodeFrameError)
})

var _ = register("frame/unknown-type", func(t *T) {
	s := t.Open()
	t.raw(s, amqpraw.AppendFrame(nil, amqp.FrameType(9), 0, []byte{1, 2, 3}, amqpraw.FrameEnd))
	t.expectFatal(s, "frame of type 9", amqp.CodeFrameError)
})

var _ = register("frame/unknown-method", func(t *T) {
	var seen []string
	ok := true
	for _, id := range [][2]uint16{{999, 10}, {60, 999}} { // an unknown class; an unknown method of basic
		s, ch := t.Fresh()
		payload := []byte{byte(id[0] >> 8), byte(id[0]), byte(id[1] >> 8), byte(id[1])}
		ctx, cancel := t.step()
		t.Must(s.SendFrame(ctx, amqp.FrameMethod, ch, payload), "method frame")
		c, err := s.ExpectConnectionClose(ctx, 0)
		cancel()
		switch {
		case err != nil:
			ok = false
			seen = append(seen, fmt.Sprintf("method %d.%d: %s", id[0], id[1], brief(err)))
		default:
			ok = ok && (c.ReplyCode == amqp.CodeNotImplemented || c.ReplyCode == amqp.CodeCommandInvalid)
			seen = append(seen, fmt.Sprintf("method %d.%d: connection.close %d %s", id[0], id[1], c.ReplyCode, c.ReplyText))
		}
	}
	if !ok {
		t.Fail("%s (want connection.close 540 or 503)", strings.Join(seen, "; "))
	}
	t.Pass("%s", strings.Join(seen, "; "))
})

var _ = register("frame/oversized", func(t *T) {
	s := t.Open()
	ch := t.Channel(s)
	max := s.TuneOk.FrameMax
	if max == 0 {
		t.Skip("the broker negotiated no frame_max limit")
	}
	// One byte over: a whole frame of frame_max+1 bytes.
	body := make([]byte, max+1-8)
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicPublish{RoutingKey: t.Name("q")}), "basic.publish")
	t.Must(s.SendHeader(ctx, ch, 60, uint64(len(body)), amqp.Properties{}), "header")
	t.Must(s.SendBody(ctx, ch, body), "body")
	t.expectFatalOrAccepted(s, ch, fmt.Sprintf("a body frame of %d bytes with frame_max %d", max+1, max), amqp.CodeFrameError)
})

// expectFatalOrAccepted is expectFatal for a frame the broker might just
// take: a basic.qos sent after it tells which.
func (t *T) expectFatalOrAccepted(s *amqpraw.Session, ch uint16, what string, codes ...amqp.ReplyCode) {
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicQos{}), "basic.qos")
	cmd, err := s.ReadCommand(ctx)
	if err == nil {
		if _, ok := cmd.Method.(*amqp.BasicQosOk); ok {
			t.Fail("%s: the broker accepted it (and answered the basic.qos sent after it)", what)
		}
		if c, ok := cmd.Method.(*amqp.ConnectionClose); ok && cmd.Channel == 0 {
			_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
			for _, code := range codes {
				if c.ReplyCode == code {
					t.Pass("%s: connection.close %d %s", what, c.ReplyCode, c.ReplyText)
				}
			}
			t.Fail("%s: connection.close %d %s, want code %v", what, c.ReplyCode, c.ReplyText, codes)
		}
		t.Fail("%s: %v", what, cmd)
	}
	if errors.Is(err, amqpraw.ErrClosedByPeer) {
		t.Pass("%s: the broker closed the socket", what)
	}
	t.Fail("%s: %v", what, brief(err))
}

func lowFrameMax(tune *amqp.ConnectionTune) *amqp.ConnectionTuneOk {
	return &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: amqp.MinFrameSize}
}

var _ = register("frame/peer-frame-max", func(t *T) {
	s := t.OpenWith(amqpraw.Handshake{TuneOk: lowFrameMax})
	ch := t.Channel(s)
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	body := bytes.Repeat([]byte("0123456789"), 3000) // 30000 bytes: 8 frames of 4096
	t.Publish(s, ch, "", q, amqp.Properties{}, string(body))
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicGet{Queue: q, NoAck: true}), "basic.get")
	frames, largest := 0, 0
	var got []byte
	for len(got) < len(body) {
		f, err := s.ReadFrame(ctx)
		if err != nil {
			t.Fail("reading the message: %v", brief(err))
		}
		frames++
		largest = max(largest, len(f.Payload)+8)
		if f.Type == amqp.FrameBody {
			got = append(got, f.Payload...)
		}
	}
	if largest > amqp.MinFrameSize {
		t.Fail("a frame of %d bytes with frame_max %d", largest, amqp.MinFrameSize)
	}
	if !bytes.Equal(got, body) {
		t.Fail("the body came back changed")
	}
	t.Pass("%d frames, the largest %d bytes, with frame_max %d", frames, largest, amqp.MinFrameSize)
})

var _ = register("frame/connection-class-channel", func(t *T) {
	s := t.Open()
	t.Channel(s)
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, 1, &amqp.ConnectionSecureOk{Response: "x"}), "connection.secure-ok")
	t.expectFatal(s, "connection.secure-ok on channel 1", amqp.CodeCommandInvalid)
})

var _ = register("frame/heartbeat-channel", func(t *T) {
	s := t.Open()
	t.Channel(s)
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendFrame(ctx, amqp.FrameHeartbeat, 1, nil), "heartbeat")
	t.expectFatal(s, "heartbeat on channel 1", amqp.CodeCommandInvalid, amqp.CodeFrameError)
})

var _ = register("frame/content-channel-zero", func(t *T) {
	s := t.Open()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendHeader(ctx, 0, 60, 1, amqp.Properties{}), "header")
	t.expectFatal(s, "content header on channel 0", amqp.CodeChannelError)
})

var _ = register("frame/header-class-id", func(t *T) {
	s := t.Open()
	ch := t.Channel(s)
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicPublish{RoutingKey: t.Name("q")}), "basic.publish")
	t.Must(s.SendHeader(ctx, ch, 50, 1, amqp.Properties{}), "header") // class 50 is queue, not basic
	t.Must(s.SendBody(ctx, ch, []byte("x")), "body")
	t.expectFatal(s, "content header of class 50 after basic.publish", amqp.CodeFrameError)
})

var _ = register("frame/body-split", func(t *T) {
	s := t.OpenWith(amqpraw.Handshake{TuneOk: lowFrameMax})
	ch := t.Channel(s)
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	body := bytes.Repeat([]byte("abcdefgh"), 2000) // 16000 bytes: 4 body frames
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendContent(ctx, ch, &amqp.BasicPublish{RoutingKey: q}, amqp.Properties{}, body), "basic.publish")
	m := t.Get(s, ch, q)
	if m == nil || !bytes.Equal(m.Body, body) {
		t.Fail("the message published in 4 body frames did not come back whole: %v", m)
	}
	t.Pass("a body sent in 4 frames came back whole")
})

// badContent sends a badly-formed content and expects 505.
func (t *T) badContent(what string, send func(s *amqpraw.Session, ch uint16)) {
	s := t.Open()
	ch := t.Channel(s)
	send(s, ch)
	t.expectFatalOrAccepted(s, ch, what, amqp.CodeUnexpectedFrame)
}

var _ = register("content/header-without-method", func(t *T) {
	t.badContent("content header with no basic.publish", func(s *amqpraw.Session, ch uint16) {
		ctx, cancel := t.step()
		defer cancel()
		t.Must(s.SendHeader(ctx, ch, 60, 1, amqp.Properties{}), "header")
		t.Must(s.SendBody(ctx, ch, []byte("x")), "body")
	})
})

var _ = register("content/body-without-header", func(t *T) {
	t.badContent("basic.publish then a body frame, no header", func(s *amqpraw.Session, ch uint16) {
		ctx, cancel := t.step()
		defer cancel()
		t.Must(s.Send(ctx, ch, &amqp.BasicPublish{RoutingKey: t.Name("q")}), "basic.publish")
		t.Must(s.SendBody(ctx, ch, []byte("x")), "body")
	})
})

var _ = register("content/method-inside-content", func(t *T) {
	t.badContent("basic.publish, a header announcing 10 bytes, then a method", func(s *amqpraw.Session, ch uint16) {
		ctx, cancel := t.step()
		defer cancel()
		t.Must(s.Send(ctx, ch, &amqp.BasicPublish{RoutingKey: t.Name("q")}), "basic.publish")
		t.Must(s.SendHeader(ctx, ch, 60, 10, amqp.Properties{}), "header")
		t.Must(s.Send(ctx, ch, &amqp.BasicQos{}), "basic.qos")
	})
})

var _ = register("content/body-overrun", func(t *T) {
	s := t.Open()
	ch := t.Channel(s)
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicPublish{RoutingKey: t.Name("q")}), "basic.publish")
	t.Must(s.SendHeader(ctx, ch, 60, 2, amqp.Properties{}), "header")
	t.Must(s.SendBody(ctx, ch, []byte("12345")), "body")
	// The overrun itself must be the error, not whatever frame comes next.
	if cmd := t.Quiet(s); cmd != nil {
		if c, ok := cmd.Method.(*amqp.ConnectionClose); ok {
			_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
			if c.ReplyCode == amqp.CodeUnexpectedFrame {
				t.Pass("5 body bytes for a 2-byte content: connection.close %d %s", c.ReplyCode, c.ReplyText)
			}
		}
		t.Fail("5 body bytes for a 2-byte content: %v", cmd)
	}
	// Say what the broker made of it once another frame came.
	t.Must(s.Send(ctx, ch, &amqp.BasicQos{}), "basic.qos")
	cmd, err := s.ReadCommand(ctx)
	after := fmt.Sprint(cmd)
	if err != nil {
		after = brief(err)
	}
	t.Fail("5 body bytes for a 2-byte content drew nothing within %s; a basic.qos sent next drew %s", t.run.opts.QuietPeriod, after)
})

var _ = register("channel/unopened", func(t *T) {
	s := t.Open()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, 5, &amqp.QueueDeclare{Queue: t.Name("q")}), "queue.declare")
	t.expectFatal(s, "queue.declare on channel 5, never opened", amqp.CodeChannelError)
})

var _ = register("channel/after-close", func(t *T) {
	s := t.Open()
	ch := t.Channel(s)
	Call[*amqp.ChannelCloseOk](t, s, ch, &amqp.ChannelClose{ReplyCode: amqp.CodeSuccess})
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.QueueDeclare{Queue: t.Name("q")}), "queue.declare")
	t.expectFatal(s, "queue.declare on a closed channel", amqp.CodeChannelError)
})

var _ = register("channel/close-handshake", func(t *T) {
	s := t.Open()
	ch := t.Channel(s)
	ExpectReply[*amqp.ChannelCloseOk](t, s, ch, &amqp.ChannelClose{ReplyCode: amqp.CodeSuccess})
})

var _ = register("connection/close-handshake", func(t *T) {
	s := t.Open()
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Call[*amqp.ConnectionCloseOk](ctx, s, 0, &amqp.ConnectionClose{ReplyCode: amqp.CodeSuccess}); err != nil {
		t.Fail("connection.close: %v", brief(err))
	}
	t.Pass("connection.close answered with connection.close-ok")
})

var _ = register("connection/limits-proposed", func(t *T) {
	s := t.Open()
	if s.Tune.FrameMax != 0 && s.Tune.FrameMax < amqp.MinFrameSize {
		t.Fail("connection.tune proposes frame_max %d, under the minimum %d", s.Tune.FrameMax, amqp.MinFrameSize)
	}
	t.Pass("connection.tune proposes channel_max %d, frame_max %d, heartbeat %d", s.Tune.ChannelMax, s.Tune.FrameMax, s.Tune.Heartbeat)
})

var _ = register("connection/channel-max", func(t *T) {
	s := t.OpenWith(amqpraw.Handshake{TuneOk: func(tune *amqp.ConnectionTune) *amqp.ConnectionTuneOk {
		return &amqp.ConnectionTuneOk{ChannelMax: 2, FrameMax: tune.FrameMax}
	}})
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.OpenChannel(ctx, 2), "opening channel 2")
	t.Must(s.Send(ctx, 3, &amqp.ChannelOpen{}), "channel.open")
	c, err := s.ExpectConnectionClose(ctx, 0)
	if err != nil {
		t.Fail("channel.open on channel 3 with channel_max 2: %v", brief(err))
	}
	if !c.ReplyCode.Hard() {
		t.Fail("channel.open on channel 3 with channel_max 2: connection.close with soft code %d", c.ReplyCode)
	}
	t.Pass("channel.open on channel 3 with channel_max 2: connection.close %d %s", c.ReplyCode, c.ReplyText)
})

var _ = register("connection/frame-max-lowered", func(t *T) {
	s := t.OpenWith(amqpraw.Handshake{TuneOk: lowFrameMax})
	if s.Tune.FrameMax != 0 && s.Tune.FrameMax < 2*amqp.MinFrameSize {
		t.Skip("the broker's own frame_max (%d) leaves no room between it and the lowered one", s.Tune.FrameMax)
	}
	ch := t.Channel(s)
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicPublish{RoutingKey: t.Name("q")}), "basic.publish")
	t.Must(s.SendHeader(ctx, ch, 60, 6000, amqp.Properties{}), "header")
	t.Must(s.SendBody(ctx, ch, make([]byte, 6000)), "body")
	t.expectFatal(s, "a 6008-byte frame with frame_max lowered to 4096", amqp.CodeFrameError)
})

var _ = register("connection/errors-before-open", func(t *T) {
	s := t.Dial()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendProtocolHeader(ctx, amqp.ProtocolHeader), "protocol header")
	if _, err := amqpraw.Expect[*amqp.ConnectionStart](ctx, s, 0); err != nil {
		t.Fail("connection.start: %v", brief(err))
	}
	// channel.open where start-ok is due.
	t.Must(s.Send(ctx, 1, &amqp.ChannelOpen{}), "channel.open")
	if err := s.ExpectClosed(ctx); err != nil {
		t.Fail("channel.open instead of start-ok: %v", brief(err))
	}
	t.Pass("channel.open instead of start-ok: the broker closed the socket without a word")
})

func heartbeatTune(tune *amqp.ConnectionTune) *amqp.ConnectionTuneOk {
	return &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: 1}
}

var _ = registerTimeout("heartbeat/sent", 30*time.Second, func(t *T) {
	s := t.OpenWith(amqpraw.Handshake{TuneOk: heartbeatTune})
	ctx, cancel := t.step()
	defer cancel()
	start := time.Now()
	for {
		f, err := s.ReadFrame(ctx)
		if err != nil {
			t.Fail("with a 1 s heartbeat interval and nothing else to send: %v", brief(err))
		}
		if f.Type == amqp.FrameHeartbeat && f.Channel == 0 {
			t.Pass("a heartbeat after %s with a 1 s interval", time.Since(start).Round(100*time.Millisecond))
		}
	}
})

var _ = register("heartbeat/accepted", func(t *T) {
	s := t.Open()
	ch := t.Channel(s)
	ctx, cancel := t.step()
	defer cancel()
	for range 3 {
		t.Must(s.SendHeartbeat(ctx), "heartbeat")
	}
	if err := t.Sync(s, ch); err != nil {
		t.Fail("after 3 heartbeats (none negotiated): %v", brief(err))
	}
	t.Pass("3 heartbeats, then basic.qos answered as usual")
})

var _ = registerTimeout("heartbeat/dead-peer", 30*time.Second, func(t *T) {
	s := t.OpenWith(amqpraw.Handshake{TuneOk: heartbeatTune})
	start := time.Now()
	for {
		f, err := s.ReadFrame(t.Context())
		switch {
		case errors.Is(err, amqpraw.ErrClosedByPeer):
			t.Pass("the broker closed the socket after %s of silence with a 1 s interval", time.Since(start).Round(100*time.Millisecond))
		case err != nil:
			t.Fail("silent for %s with a 1 s heartbeat interval: %v", time.Since(start).Round(100*time.Millisecond), brief(err))
		case f.Type != amqp.FrameHeartbeat:
			ctx, cancel := t.step()
			if _, err := s.ExpectConnectionClose(ctx, 0); err == nil {
				cancel()
				t.Fail("the broker used the close handshake (connection.close), not a bare close")
			}
			cancel()
			t.Fail("while silent: %s frame on channel %d", f.Type, f.Channel)
		}
	}
})
