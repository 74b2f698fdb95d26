package amqpraw

import (
	"context"
	"fmt"

	"github.com/amqp-go/amqp"
)

// Handshake says how [Session.Handshake] opens the connection. The zero
// value logs in as guest/guest to "/" and accepts the broker's tune values
// with heartbeats off.
type Handshake struct {
	Username, Password string // PLAIN credentials; empty means guest
	Vhost              string // empty means "/"

	// Mechanism and Response replace the PLAIN login when Mechanism is set.
	Mechanism, Response string

	// ClientProperties default to a product name and the capabilities of
	// every RabbitMQ extension (publisher_confirms, consumer_cancel_notify,
	// exchange_exchange_bindings, basic.nack, connection.blocked,
	// authentication_failure_close, per_consumer_qos, direct_reply_to).
	ClientProperties amqp.Table

	// TuneOk, when set, chooses the answer to connection.tune; nil accepts
	// the broker's channel_max and frame_max and turns heartbeats off.
	TuneOk func(*amqp.ConnectionTune) *amqp.ConnectionTuneOk
}

// DefaultClientProperties returns the client properties Handshake sends by
// default.
func DefaultClientProperties() amqp.Table {
	caps := amqp.Table{}
	for _, c := range []string{"publisher_confirms", "consumer_cancel_notify", "exchange_exchange_bindings",
		"basic.nack", "connection.blocked", "authentication_failure_close", "per_consumer_qos", "direct_reply_to"} {
		caps[c] = true
	}
	return amqp.Table{"product": "amqpraw", "platform": "Go", "capabilities": caps}
}

// Handshake runs the opening handshake: protocol header, connection.start
// answered with start-ok, connection.tune answered with tune-ok, then
// connection.open and open-ok. Zero fields of h take the session's
// defaults (Options.Handshake, which DialURL fills from the URL). It
// records what was negotiated in s.Start, s.Tune, s.TuneOk and s.FrameMax.
func (s *Session) Handshake(ctx context.Context, h Handshake) error {
	d := s.opts.Handshake
	h.Username = first(h.Username, d.Username, "guest")
	h.Password = first(h.Password, d.Password, "guest")
	h.Vhost = first(h.Vhost, d.Vhost, "/")
	h.Mechanism = first(h.Mechanism, d.Mechanism)
	h.Response = first(h.Response, d.Response)
	if h.ClientProperties == nil {
		h.ClientProperties = d.ClientProperties
	}
	if h.ClientProperties == nil {
		h.ClientProperties = DefaultClientProperties()
	}
	if h.TuneOk == nil {
		h.TuneOk = d.TuneOk
	}
	if err := s.SendProtocolHeader(ctx, amqp.ProtocolHeader); err != nil {
		return err
	}
	start, err := Expect[*amqp.ConnectionStart](ctx, s, 0)
	if err != nil {
		return err
	}
	s.Start = start
	mech, resp := h.Mechanism, h.Response
	if mech == "" {
		mech, resp = "PLAIN", "\x00"+h.Username+"\x00"+h.Password
	}
	if err := s.Send(ctx, 0, &amqp.ConnectionStartOk{ClientProperties: h.ClientProperties, Mechanism: mech, Response: resp, Locale: "en_US"}); err != nil {
		return err
	}
	tune, err := Expect[*amqp.ConnectionTune](ctx, s, 0)
	if err != nil {
		return err
	}
	s.Tune = tune
	ok := &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax}
	if h.TuneOk != nil {
		ok = h.TuneOk(tune)
	}
	s.TuneOk, s.FrameMax = ok, ok.FrameMax
	if err := s.Send(ctx, 0, ok); err != nil {
		return err
	}
	if _, err := Call[*amqp.ConnectionOpenOk](ctx, s, 0, &amqp.ConnectionOpen{VirtualHost: h.Vhost}); err != nil {
		return fmt.Errorf("opening vhost %q: %w", h.Vhost, err)
	}
	return nil
}

// OpenChannel opens channel ch and waits for channel.open-ok.
func (s *Session) OpenChannel(ctx context.Context, ch uint16) error {
	_, err := Call[*amqp.ChannelOpenOk](ctx, s, ch, &amqp.ChannelOpen{})
	return err
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
