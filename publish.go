package amqp

import (
	"context"
	"fmt"
	"slices"
)

// Publishing is a message to publish with [Channel.Publish]: where it goes
// (basic.publish's arguments), its properties and its body.
type Publishing struct {
	Exchange   string // the exchange to publish to; "" is the default exchange
	RoutingKey string // the routing key; for the default exchange, the queue name

	// Mandatory asks the server to return the message (basic.return) when
	// it cannot be routed to any queue, instead of dropping it.
	Mandatory bool
	// Immediate is refused by RabbitMQ (it closes the connection with 540
	// NOT_IMPLEMENTED). Publish returns ErrImmediateUnsupported rather than
	// sending it, unless Channel.AllowImmediate is called first (for
	// conformance tests against other brokers).
	Immediate bool

	Properties
	// Body is the message's content. Publish does not keep it after it
	// returns (unless recovery republishes unconfirmed messages; see
	// RecoveryConfig), so the caller may reuse or modify it as soon as
	// Publish returns, whatever the outcome.
	Body []byte
}

// Delivery modes, for Properties.DeliveryMode. Zero, the default, is
// transient too.
const (
	// Transient messages are kept in memory only (where the queue allows):
	// they are lost if the broker restarts.
	Transient uint8 = 1
	// Persistent messages are written to disk by a durable queue and survive
	// a broker restart; they cost more to publish.
	Persistent uint8 = 2
)

// Publish sends a message (basic.publish with its content header and body
// frames, split by the negotiated frame_max and written contiguously). It
// returns once the frames are queued for the socket; it does not wait for the
// server. ctx bounds waiting while the server blocks the connection
// ([BlockedError]), while the server paused the channel (channel.flow), and
// for room in the write queue. It is safe to call from many goroutines.
//
// Bodies under 64 KiB are copied into the write queue. A larger body is
// written straight from msg.Body (one vectored write with its frame headers,
// on plain TCP and Unix sockets; over TLS or a wrapped net.Conn it is copied
// too), so Publish then returns once the socket has taken it: this is the
// backpressure of big messages. If ctx ends before the write of the message
// has begun, Publish copies the body, leaves the message queued and returns;
// once the write has begun it waits for it to finish or fail (a frame is
// never cut), which the socket bounds. Either way the body is free for reuse
// when Publish returns.
//
// The returned [Confirmation] is never nil. In confirm mode it resolves
// with the server's ack, nack or return; otherwise it is already resolved. A
// value that cannot be encoded (a routing key over 255 bytes, an unsupported
// header type) returns a *FieldError and sends nothing.
func (ch *Channel) Publish(ctx context.Context, msg Publishing) (*Confirmation, error) {
	if t := ch.conn.tr.publish; t != nil {
		return ch.publishTraced(ctx, t, msg)
	}
	return ch.publish(ctx, &msg, nil)
}

// publish is Publish; tr, when non-nil, is the publish's trace, ended with
// its confirmation in confirm mode.
func (ch *Channel) publish(ctx context.Context, msg *Publishing, tr *publishTrace) (*Confirmation, error) {
	if msg.Immediate && !ch.allowImmediate.Load() {
		return failedConfirmation(ErrImmediateUnsupported), ErrImmediateUnsupported
	}
	method := BasicPublish{Exchange: msg.Exchange, RoutingKey: msg.RoutingKey, Mandatory: msg.Mandatory, Immediate: msg.Immediate}
	conf := settled
	var large *outBody
	err := ch.withSendLock(ctx, publishKind, ch.waitPublishable, func(l *link) error {
		frameMax := l.frameMax
		var err error
		large = nil
		if len(msg.Body) >= largeBodyThreshold {
			large, err = l.w.appendLarge(func(b []byte) ([]byte, error) {
				return appendPublishHead(b, ch.id, &method, &msg.Properties, len(msg.Body), frameMax)
			}, ch.id, msg.Body, frameMax)
		}
		if large == nil && err == nil {
			err = l.w.appendFrames(func(b []byte) ([]byte, error) {
				return appendPublishFrames(b, ch.id, &method, &msg.Properties, msg.Body, frameMax)
			})
		}
		if err != nil {
			return err // never sent; withSendLock retries it after a recovery
		}
		ch.txWork = ch.txWork || ch.txMode
		if ch.confirms.active {
			conf = ch.confirms.add(ch)
			conf.trace = tr
			if msg.Mandatory {
				conf.mandatory, conf.exchange, conf.rkey = true, msg.Exchange, msg.RoutingKey
			}
			if ch.conn.republishing() {
				kept := *msg
				conf.msg = &kept
			}
		}
		return nil
	})
	if err != nil {
		return failedConfirmation(err), err
	}
	if large != nil {
		large.wait(ctx)
	}
	return conf, nil
}

// publishKind stands for basic.publish where only the method's kind and name
// matter (the checks and error messages of withSendLock and sendError):
// passing the publish's own method there would move it to the heap.
var publishKind = &BasicPublish{}

// appendPublishFrames encodes a whole message: method, header and body frames. The
// method and header frames must each fit in frameMax; the body is split.
func appendPublishFrames(b []byte, channel uint16, m *BasicPublish, p *Properties, body []byte, frameMax uint32) ([]byte, error) {
	b, err := appendPublishHead(b, channel, m, p, len(body), frameMax)
	if err != nil {
		return b, err
	}
	if len(body) >= largeBodyThreshold {
		// Copied (over TLS, say): grow the buffer once, not frame by frame.
		b = slices.Grow(b, len(body)+(len(body)/bodyChunk(len(body), frameMax)+1)*frameOverhead)
	}
	return AppendBodyFrames(b, channel, body, frameMax), nil
}

// appendPublishHead encodes a message's method and header frames, each of
// which must fit in frameMax.
func appendPublishHead(b []byte, channel uint16, m *BasicPublish, p *Properties, bodySize int, frameMax uint32) ([]byte, error) {
	orig := len(b)
	b, start := beginFrame(b, FrameMethod, channel)
	b = appendShort(b, 60)
	b = appendShort(b, 40)
	b, err := m.appendArgs(b)
	if err != nil {
		return b[:orig], err
	}
	b = endFrame(b, start)
	headerStart := len(b)
	if b, err = AppendHeaderFrame(b, channel, 60, uint64(bodySize), p); err != nil {
		return b[:orig], err
	}
	if frameMax != 0 && (headerStart-orig > int(frameMax) || len(b)-headerStart > int(frameMax)) {
		return b[:orig], fmt.Errorf("%w: basic.publish method or header frame of %d bytes (the properties are too large)",
			ErrFrameTooLarge, max(headerStart-orig, len(b)-headerStart))
	}
	return b, nil
}

// AllowImmediate lets Publish send the immediate flag, for brokers that
// implement it. RabbitMQ closes the connection when it sees it.
func (ch *Channel) AllowImmediate() { ch.allowImmediate.Store(true) }

// publishTraced is Publish with a PublishTracer: the start hook sees (and may
// change) Publish's copy of the message. Kept apart from Publish so that the
// untraced path's message never escapes to the heap.
func (ch *Channel) publishTraced(ctx context.Context, t PublishTracer, msg Publishing) (*Confirmation, error) {
	tr := &publishTrace{t: t, exchange: msg.Exchange, routingKey: msg.RoutingKey, msg: msg}
	tr.ctx = t.TracePublishStart(ctx, ch, TracePublishStartData{Msg: &tr.msg})
	conf, err := ch.publish(ctx, &tr.msg, tr)
	tr.msg = Publishing{} // encoded (or kept apart for republishing): let the body go
	switch {
	case err != nil:
		tr.end(ch, TracePublishEndData{Outcome: PublishFailed, Err: err})
	case !conf.requested:
		tr.end(ch, TracePublishEndData{Outcome: PublishSent})
	}
	return conf, err
}
