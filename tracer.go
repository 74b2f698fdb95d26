package amqp

import (
	"context"
	"slices"
	"sync"
)

// Tracing hooks, in the style of pgx v5: [Config.Tracer] is one value, and
// each of the interfaces below that it implements is found once, when the
// connection is dialed. A connection without a tracer pays one nil check per
// hook site and allocates nothing more than it would anyway.
//
// Hooks must be safe for concurrent use: a connection calls them from the
// goroutines named on each interface. A hook that runs on the connection's
// callback goroutine delays later callbacks (OnAck, OnReturn, ...) while it
// runs, and never the reader. Hooks must not call back into the connection
// in a way that waits for the callback goroutine (Close does not).

// ConnectTracer traces [Dial] and [DialConfig]: the TCP dial, TLS and AMQP
// handshake over each address until one succeeds. Both hooks run on the
// goroutine that called DialConfig. Reconnections are reported to a
// [RecoveryTracer].
type ConnectTracer interface {
	TraceConnectStart(ctx context.Context, data TraceConnectStartData) context.Context
	TraceConnectEnd(ctx context.Context, data TraceConnectEndData)
}

// TraceConnectStartData describes a dial that begins.
type TraceConnectStartData struct {
	Addrs []string // the addresses to try, in order (do not modify)
	Vhost string
}

// TraceConnectEndData describes the outcome of a dial.
type TraceConnectEndData struct {
	Conn *Connection // nil on failure
	Addr string      // the address connected to; "" on failure
	Err  error       // nil on success; a *DialError or the one address's error otherwise
}

// PublishTracer traces [Channel.Publish]. TracePublishStart runs on the
// publishing goroutine before the message is encoded, and may add headers
// (trace context propagation) to data.Msg: replace Msg.Headers with a new
// table holding the caller's entries and the new ones, since the caller's
// table belongs to the caller. The context it returns is passed to
// TracePublishEnd, which runs:
//
//   - outside confirm mode, or when Publish fails, on the publishing
//     goroutine before Publish returns (Outcome PublishSent or PublishFailed);
//   - in confirm mode, on the connection's callback goroutine when the
//     server's ack, nack or return arrives or the publish is lost.
type PublishTracer interface {
	TracePublishStart(ctx context.Context, ch *Channel, data TracePublishStartData) context.Context
	TracePublishEnd(ctx context.Context, ch *Channel, data TracePublishEndData)
}

// TracePublishStartData describes a publish that begins.
type TracePublishStartData struct {
	// Msg is Publish's own copy of the message: changes to it are sent.
	// Replace Headers rather than writing into the caller's table.
	Msg *Publishing
}

// PublishOutcome is how a publish ended, as a [PublishTracer] sees it.
type PublishOutcome uint8

const (
	// PublishSent: queued for the socket outside confirm mode; the server
	// says nothing more about it.
	PublishSent PublishOutcome = iota + 1
	// PublishAcked: the server acked it (confirm mode).
	PublishAcked
	// PublishNacked: the server nacked it (confirm mode); Err is ErrNacked.
	PublishNacked
	// PublishReturned: the server returned it unroutable (mandatory, confirm mode).
	PublishReturned
	// PublishLost: the channel or connection closed before the outcome was
	// known; Err says why. The message may or may not have been routed.
	PublishLost
	// PublishFailed: Publish returned Err and sent nothing.
	PublishFailed
)

var publishOutcomeNames = [...]string{"", "sent", "acked", "nacked", "returned", "lost", "failed"}

func (o PublishOutcome) String() string {
	if int(o) < len(publishOutcomeNames) {
		return publishOutcomeNames[o]
	}
	return "unknown"
}

// TracePublishEndData describes how a publish ended.
type TracePublishEndData struct {
	Exchange, RoutingKey string
	DeliveryTag          uint64 // the publish sequence number in confirm mode, else 0
	Outcome              PublishOutcome
	Err                  error   // nil for PublishSent and PublishAcked
	Return               *Return // the returned message, for PublishReturned
}

// DeliveryTracer traces a delivery's life in the application, from the
// moment [Consumer.Next] (or [Channel.Get]) hands it out until it is
// settled. Both hooks run on application goroutines: TraceDeliveryStart on
// the one calling Next or Get, TraceDeliveryEnd on the one calling Ack,
// Nack, Reject or Release. Deliveries whose tags a channel error, recovery
// or close made void end with DeliveryLost on the connection's callback
// goroutine (or at once, on the goroutine calling Next or Get, for one that
// was void before it was handed out). A delivery taken in no-ack mode ends at once with
// DeliveryAutoAcked. The context TraceDeliveryStart returns is kept (in a
// table the channel allocates only when a DeliveryTracer is set, so a
// Delivery stays the same size) and is available as [Delivery.TraceContext]
// until the delivery is settled.
type DeliveryTracer interface {
	TraceDeliveryStart(ctx context.Context, ch *Channel, data TraceDeliveryStartData) context.Context
	TraceDeliveryEnd(ctx context.Context, ch *Channel, data TraceDeliveryEndData)
}

// TraceDeliveryStartData describes a delivery the application receives.
type TraceDeliveryStartData struct {
	// Delivery is valid only during the hook if the consumer recycles deliveries.
	Delivery *Delivery
}

// DeliveryOutcome is how a delivery was settled, as a [DeliveryTracer] sees it.
type DeliveryOutcome uint8

const (
	DeliveryAcked          DeliveryOutcome = iota + 1 // basic.ack, alone or by a multiple ack
	DeliveryNacked                                    // basic.nack
	DeliveryRejected                                  // basic.reject
	DeliveryReleased                                  // Release before any acknowledgement (the server keeps it unacked until the channel closes)
	DeliveryAutoAcked                                 // no-ack mode: the server settled it when sending it
	DeliveryLost                                      // its tag became void (channel error, recovery, close): the server requeued it
	DeliverySettledEarlier                            // a multiple ack or nack of a later delivery settled it before it was handed out
)

var deliveryOutcomeNames = [...]string{"", "acked", "nacked", "rejected", "released", "auto-acked", "lost", "settled-earlier"}

func (o DeliveryOutcome) String() string {
	if int(o) < len(deliveryOutcomeNames) {
		return deliveryOutcomeNames[o]
	}
	return "unknown"
}

// TraceDeliveryEndData describes how a delivery was settled.
type TraceDeliveryEndData struct {
	DeliveryTag uint64
	Outcome     DeliveryOutcome
	Requeue     bool // for DeliveryNacked and DeliveryRejected
	Multiple    bool // settled by a multiple acknowledgement (possibly of a later delivery)
}

// CallTracer traces synchronous methods (declare, bind, qos, consume,
// confirm.select, ...: every request that waits for a reply, including the
// ones recovery sends). Both hooks run on the calling goroutine (recovery's
// own goroutine for its calls).
type CallTracer interface {
	TraceCallStart(ctx context.Context, ch *Channel, data TraceCallStartData) context.Context
	TraceCallEnd(ctx context.Context, ch *Channel, data TraceCallEndData)
}

// TraceCallStartData describes a synchronous call that begins.
type TraceCallStartData struct {
	Method Method // the request; do not modify
}

// TraceCallEndData describes how a synchronous call ended.
type TraceCallEndData struct {
	Method Method // the request
	Reply  Method // the server's reply; nil on error
	Err    error
}

// ChannelErrorTracer is told of each channel error the server reports
// (channel.close with a soft code), on the connection's callback goroutine.
type ChannelErrorTracer interface {
	TraceChannelError(ch *Channel, err *Error)
}

// RecoveryTracer is told of each recovery step ([RecoveryEvent]: start,
// failed attempts, success or failure, entities), on the connection's
// callback goroutine, in order with [Connection.OnRecovery] listeners.
type RecoveryTracer interface {
	TraceRecovery(c *Connection, ev RecoveryEvent)
}

// BlockedTracer is told when the server blocks and unblocks publishing on
// the connection, on the connection's callback goroutine.
type BlockedTracer interface {
	TraceBlocked(c *Connection, b Blocking)
}

// ReturnTracer is told of every message the server returns (basic.return),
// in confirm mode or not, on the connection's callback goroutine.
type ReturnTracer interface {
	TraceReturn(ch *Channel, r Return)
}

// tracers holds the hooks Config.Tracer implements, found once.
type tracers struct {
	connect  ConnectTracer
	publish  PublishTracer
	delivery DeliveryTracer
	call     CallTracer
	chanErr  ChannelErrorTracer
	recovery RecoveryTracer
	blocked  BlockedTracer
	ret      ReturnTracer
}

func newTracers(t any) (tracers, error) {
	if t == nil {
		return tracers{}, nil
	}
	var ts tracers
	ts.connect, _ = t.(ConnectTracer)
	ts.publish, _ = t.(PublishTracer)
	ts.delivery, _ = t.(DeliveryTracer)
	ts.call, _ = t.(CallTracer)
	ts.chanErr, _ = t.(ChannelErrorTracer)
	ts.recovery, _ = t.(RecoveryTracer)
	ts.blocked, _ = t.(BlockedTracer)
	ts.ret, _ = t.(ReturnTracer)
	if ts == (tracers{}) {
		return tracers{}, errNoTracerInterface
	}
	return ts, nil
}

// publishTrace is what a traced publish carries to its end: allocated only
// when a PublishTracer is set, and kept on the Confirmation in confirm mode.
// It holds Publish's copy of the message too (one allocation for both),
// until the frames are encoded.
type publishTrace struct {
	t                    PublishTracer
	ctx                  context.Context
	exchange, routingKey string
	msg                  Publishing
}

func (tr *publishTrace) end(ch *Channel, data TracePublishEndData) {
	data.Exchange, data.RoutingKey = tr.exchange, tr.routingKey
	tr.t.TracePublishEnd(tr.ctx, ch, data)
}

// deliveryTraces holds the contexts of a channel's traced deliveries that
// are not settled yet, by delivery tag. A channel has one only when a
// DeliveryTracer is set: the per-delivery state lives here, not in Delivery.
type deliveryTraces struct {
	t      DeliveryTracer
	mu     sync.Mutex
	epoch  *epoch                     // the tags' epoch; guarded by mu
	live   map[uint64]context.Context // guarded by mu
	closed bool                       // the channel ended: nothing more can be settled; guarded by mu
}

type endedTrace struct {
	tag uint64
	ctx context.Context
}

// track keeps the context of a delivery the application took, until the
// delivery is settled, released or made void; a delivery void already (its
// epoch is over, or the channel ended) ends at once as DeliveryLost, and so
// do the traces of an older epoch it sweeps.
func (dt *deliveryTraces) track(ch *Channel, d *Delivery, dctx context.Context) {
	// The epoch is read under dt.mu: a new epoch stores itself before its
	// sweep takes dt.mu, so either this sees it, or the sweep sees this entry.
	dt.mu.Lock()
	cur := ch.epoch.Load()
	if d.epoch != cur || dt.closed { // already void: the server requeued it
		dt.mu.Unlock()
		dt.t.TraceDeliveryEnd(dctx, ch, TraceDeliveryEndData{DeliveryTag: d.DeliveryTag, Outcome: DeliveryLost})
		return
	}
	lost := dt.sweepLocked(cur)
	dt.live[d.DeliveryTag] = dctx
	dt.mu.Unlock()
	dt.endAll(ch, lost, TraceDeliveryEndData{Outcome: DeliveryLost})
}

// sweepLocked moves to epoch cur, taking the traces of an older epoch,
// whose tags are void. dt.mu must be held.
func (dt *deliveryTraces) sweepLocked(cur *epoch) []endedTrace {
	if dt.epoch == cur && dt.live != nil {
		return nil
	}
	var lost []endedTrace
	for tag, ctx := range dt.live {
		lost = append(lost, endedTrace{tag, ctx})
	}
	dt.epoch, dt.live = cur, map[uint64]context.Context{}
	return lost
}

// settled ends, with data, the traces that an acknowledgement of tag in
// epoch e settled: tag's, or with data.Multiple every one up to it (none if
// a new epoch has already swept them as lost).
func (dt *deliveryTraces) settled(ch *Channel, e *epoch, tag uint64, data TraceDeliveryEndData) {
	var ended []endedTrace
	dt.mu.Lock()
	if dt.epoch != e {
		dt.mu.Unlock()
		return
	}
	if !data.Multiple { // the common case, without a slice
		ctx, ok := dt.live[tag]
		delete(dt.live, tag)
		dt.mu.Unlock()
		if ok {
			data.DeliveryTag = tag
			dt.t.TraceDeliveryEnd(ctx, ch, data)
		}
		return
	}
	for t, ctx := range dt.live {
		if t <= tag {
			ended = append(ended, endedTrace{t, ctx})
			delete(dt.live, t)
		}
	}
	dt.mu.Unlock()
	dt.endAll(ch, ended, data)
}

// traceReleased ends the trace of a delivery released unacknowledged.
func (ch *Channel) traceReleased(d *Delivery) {
	dt := ch.traces
	dt.mu.Lock()
	ctx, ok := dt.live[d.DeliveryTag]
	ok = ok && d.epoch == dt.epoch // decided under the lock: a sweep may follow
	if ok {
		delete(dt.live, d.DeliveryTag)
	}
	dt.mu.Unlock()
	if ok {
		dt.t.TraceDeliveryEnd(ctx, ch, TraceDeliveryEndData{DeliveryTag: d.DeliveryTag, Outcome: DeliveryReleased})
	}
}

// traceEpochEnded ends, as DeliveryLost, the open delivery traces whose
// tags a new epoch (next) or the channel's end (next nil) made void. It may
// run on the reader, so the hooks run on the callback goroutine.
func (ch *Channel) traceEpochEnded(next *epoch) {
	dt := ch.traces
	dt.mu.Lock()
	lost := dt.sweepLocked(next)
	dt.closed = dt.closed || next == nil
	dt.mu.Unlock()
	if len(lost) > 0 {
		ch.conn.events.push(func() { dt.endAll(ch, lost, TraceDeliveryEndData{Outcome: DeliveryLost}) })
	}
}

// endAll ends traces in tag order.
func (dt *deliveryTraces) endAll(ch *Channel, ended []endedTrace, data TraceDeliveryEndData) {
	slices.SortFunc(ended, func(a, b endedTrace) int {
		switch {
		case a.tag < b.tag:
			return -1
		case a.tag > b.tag:
			return 1
		}
		return 0
	})
	for _, e := range ended {
		data.DeliveryTag = e.tag
		dt.t.TraceDeliveryEnd(e.ctx, ch, data)
	}
}

// TraceContext returns the context the [DeliveryTracer] returned when the
// delivery was handed out (carrying, for example, its span), until the
// delivery is settled; otherwise, and without a DeliveryTracer, ctx. Use it
// as the parent of the work done for the message.
func (d *Delivery) TraceContext(ctx context.Context) context.Context {
	if d.epoch == nil || d.epoch.ch.traces == nil {
		return ctx
	}
	dt := d.epoch.ch.traces
	dt.mu.Lock()
	defer dt.mu.Unlock()
	if tctx, ok := dt.live[d.DeliveryTag]; ok && d.epoch == dt.epoch {
		return tctx
	}
	return ctx
}
