package amqp

import (
	"context"
	"fmt"
)

// AckOptions are the options of [Delivery.Ack].
type AckOptions struct {
	// Multiple acknowledges every unacknowledged delivery on the channel up
	// to and including this one.
	Multiple bool
}

// NackOptions are the options of [Delivery.Nack] (RabbitMQ's basic.nack).
type NackOptions struct {
	Multiple bool // also reject every unacknowledged delivery on the channel before this one
	Requeue  bool // put the message(s) back in the queue rather than discard or dead-letter them
}

// RejectOptions are the options of [Delivery.Reject].
type RejectOptions struct {
	Requeue bool // put the message back in the queue rather than discard or dead-letter it
}

// Ack acknowledges the delivery (basic.ack). It never waits: it queues the
// frame for the socket and returns, so it takes no context and works the
// same after the context the delivery was consumed with has ended. (The
// frame is a few bytes, one per delivery received, so it is not held back
// by the write queue's backpressure; there is no reply to wait for.)
//
// It returns ErrNoAckDelivery, ErrAlreadySettled or ErrStaleDelivery without
// sending anything when the acknowledgement would be a protocol error. On a
// connection that is being lost, or was lost, the delivery's tag died with it
// (the server requeues the message): the error matches ErrStaleDelivery and
// the cause. On a channel that has ended it returns the channel's error.
func (d *Delivery) Ack(opt AckOptions) error {
	return d.settle(settlement{kind: ackKind, multiple: opt.Multiple})
}

// Nack rejects the delivery, and with Multiple those before it (basic.nack).
// Like Ack it never waits, and it returns the same local errors.
func (d *Delivery) Nack(opt NackOptions) error {
	return d.settle(settlement{kind: nackKind, multiple: opt.Multiple, requeue: opt.Requeue})
}

// Reject rejects the delivery (basic.reject). Like Ack it never waits, and
// it returns the same local errors.
func (d *Delivery) Reject(opt RejectOptions) error {
	return d.settle(settlement{kind: rejectKind, requeue: opt.Requeue})
}

// settlement is a basic.ack, basic.nack or basic.reject to send, kept as
// plain values: a method struct passed as a Method would escape to the heap,
// an allocation per acknowledgement.
type settlement struct {
	kind              Method // ackKind, nackKind or rejectKind: which method, for its name and kind only
	multiple, requeue bool
}

// appendFrame appends the settlement's method frame for tag on channel.
func (s settlement) appendFrame(b []byte, channel uint16, tag uint64) []byte {
	b, start := beginFrame(b, FrameMethod, channel)
	switch s.kind {
	case ackKind:
		m := BasicAck{DeliveryTag: tag, Multiple: s.multiple}
		b = appendShort(appendShort(b, m.ClassID()), m.MethodID())
		b, _ = m.appendArgs(b) // fixed-size fields: cannot fail
	case nackKind:
		m := BasicNack{DeliveryTag: tag, Multiple: s.multiple, Requeue: s.requeue}
		b = appendShort(appendShort(b, m.ClassID()), m.MethodID())
		b, _ = m.appendArgs(b)
	default:
		m := BasicReject{DeliveryTag: tag, Requeue: s.requeue}
		b = appendShort(appendShort(b, m.ClassID()), m.MethodID())
		b, _ = m.appendArgs(b)
	}
	return endFrame(b, start)
}

func (d *Delivery) settle(s settlement) error {
	if d.epoch == nil {
		return fmt.Errorf("amqp: %s: delivery has no channel", s.kind.MethodName())
	}
	if d.released {
		return ErrReleased
	}
	if d.noAck {
		return ErrNoAckDelivery
	}
	ch := d.epoch.ch
	if d.epoch != ch.epoch.Load() {
		return ErrStaleDelivery // also while recovering: no need to wait to know
	}
	ch.mu.Lock()
	tag, err := d.settleSendLocked(s)
	ch.mu.Unlock()
	if err != nil {
		return err
	}
	if ch.traces != nil { // (user hooks: never under the channel's lock)
		ch.traceSettled(d.epoch, tag, s)
	}
	return nil
}

// settleSendLocked checks and records the settlement and queues its frame,
// without waiting for anything (see Ack). ch.mu must be held.
func (d *Delivery) settleSendLocked(s settlement) (tag uint64, err error) {
	ch := d.epoch.ch
	if err := ch.usableLocked(s.kind); err != nil {
		if err == errRecovering {
			// Not reached for a current delivery: a recovery starts a new
			// epoch when it detaches the channel. Never wait anyway.
			return 0, ErrStaleDelivery
		}
		return 0, err
	}
	l := ch.link.Load()
	if l == nil || l.ended() {
		return 0, lostSettlementError(l)
	}
	if err := d.settleLocked(s.multiple); err != nil {
		return 0, err
	}
	tag = d.DeliveryTag
	// No waitRoom: settling never waits.
	err = l.w.appendFrames(func(b []byte) ([]byte, error) {
		return s.appendFrame(b, ch.id, tag), nil
	})
	if err != nil { // the writer is down, so the link is ending and the tag with it
		return 0, lostSettlementError(l)
	}
	return tag, nil
}

// lostSettlementError reports a settlement on a link that is ending or has
// ended: the server requeues the delivery, whose tag is void.
func lostSettlementError(l *link) error {
	cause := ErrConnectionLost
	if l != nil && l.ended() && l.err != nil {
		cause = l.err
	}
	return fmt.Errorf("%w: %w", ErrStaleDelivery, cause)
}

// settleLocked checks that the delivery can be settled and records it as
// settled (with multiple, every unsettled one before it too), and in a
// transaction what the next rollback must undo. ch.mu must be held.
func (d *Delivery) settleLocked(multiple bool) error {
	ch := d.epoch.ch
	if d.epoch != ch.epoch.Load() {
		return ErrStaleDelivery
	}
	var newly []uint64
	if ch.txMode {
		newly = ch.settle.appendUnsettled(nil, d.DeliveryTag, multiple)
	}
	if err := ch.settle.settle(d.DeliveryTag, multiple); err != nil {
		return err
	}
	ch.txSettled = append(ch.txSettled, newly...)
	ch.txWork = ch.txWork || ch.txMode
	return nil
}

// traceReceived starts a delivery's trace as the application takes it
// (Consumer.Next, Channel.Get). A no-ack delivery, and one a multiple
// acknowledgement already settled, end at once; the rest are tracked until
// settled (see traceSettled).
func (ch *Channel) traceReceived(ctx context.Context, d *Delivery) {
	dt := ch.traces
	dctx := dt.t.TraceDeliveryStart(ctx, ch, TraceDeliveryStartData{Delivery: d})
	if d.noAck {
		dt.t.TraceDeliveryEnd(dctx, ch, TraceDeliveryEndData{DeliveryTag: d.DeliveryTag, Outcome: DeliveryAutoAcked})
		return
	}
	// A multiple acknowledgement of a later delivery (of another consumer
	// on the channel) may have settled it while it waited in the buffer:
	// nothing would end its trace. (ch.mu before dt.mu, as elsewhere.)
	ch.mu.Lock()
	early := d.epoch == ch.epoch.Load() && ch.settle.isSettled(d.DeliveryTag)
	ch.mu.Unlock()
	if early {
		dt.t.TraceDeliveryEnd(dctx, ch, TraceDeliveryEndData{DeliveryTag: d.DeliveryTag, Outcome: DeliverySettledEarlier, Multiple: true})
		return
	}
	dt.track(ch, d, dctx)
}

// traceSettled ends the traces a successful settlement s of tag in epoch e
// settled.
func (ch *Channel) traceSettled(e *epoch, tag uint64, s settlement) {
	data := TraceDeliveryEndData{Outcome: DeliveryAcked, Multiple: s.multiple, Requeue: s.requeue}
	switch s.kind {
	case nackKind:
		data.Outcome = DeliveryNacked
	case rejectKind:
		data.Outcome = DeliveryRejected
	}
	ch.traces.settled(ch, e, tag, data)
}

// newEpochLocked starts a new span of delivery tags: deliveries from before
// become stale. ch.mu must be held (or ch not yet shared).
func (ch *Channel) newEpochLocked() {
	e := &epoch{ch: ch}
	ch.epoch.Store(e)
	if ch.traces != nil {
		ch.traceEpochEnded(e)
	}
}

// tagWindow tracks which delivery tags of a channel epoch are settled,
// so a second acknowledgement is caught locally. Tags arrive in increasing
// order; only the span from the oldest unsettled tag to the newest is kept,
// which prefetch (or the consumer buffer limit) keeps small.
type tagWindow struct {
	base    uint64 // the tag of settled[0]; every tag below it is settled
	settled []bool
}

func (w *tagWindow) reset() { *w = tagWindow{} }

// received records a new delivery; a no-ack one is settled on arrival.
func (w *tagWindow) received(tag uint64, settled bool) {
	if len(w.settled) == 0 {
		if settled {
			w.base = tag + 1
			return
		}
		w.base = tag
	}
	for w.base+uint64(len(w.settled)) < tag { // a gap: tags we never saw count as settled
		w.settled = append(w.settled, true)
	}
	w.settled = append(w.settled, settled)
	w.compact()
}

// isSettled reports whether tag, received in this window's epoch, is
// settled already (a tag not received yet is not).
func (w *tagWindow) isSettled(tag uint64) bool {
	switch {
	case tag < w.base:
		return true
	case tag >= w.base+uint64(len(w.settled)):
		return false
	}
	return w.settled[tag-w.base]
}

// settleOne marks tag alone settled, or reports that it was settled already.
func (w *tagWindow) settleOne(tag uint64) error { return w.settle(tag, false) }

// settle marks tag (and with multiple, every tag before it) settled, or
// reports that tag was settled already.
func (w *tagWindow) settle(tag uint64, multiple bool) error {
	if tag < w.base || tag >= w.base+uint64(len(w.settled)) || w.settled[tag-w.base] {
		return ErrAlreadySettled
	}
	if multiple {
		for i := range tag - w.base + 1 {
			w.settled[i] = true
		}
	} else {
		w.settled[tag-w.base] = true
	}
	w.compact()
	return nil
}

// appendUnsettled appends to dst the tags that settle(tag, multiple) would
// settle: tag, or with multiple every unsettled tag up to it. A rollback
// needs exactly those back.
func (w *tagWindow) appendUnsettled(dst []uint64, tag uint64, multiple bool) []uint64 {
	if !multiple {
		return append(dst, tag)
	}
	for i, s := range w.settled {
		t := w.base + uint64(i)
		if t > tag {
			break
		}
		if !s {
			dst = append(dst, t)
		}
	}
	return dst
}

// unsettle marks tag unsettled again (after a transaction rollback),
// growing the window down or up to cover it; tags it grows over stay settled.
func (w *tagWindow) unsettle(tag uint64) {
	if len(w.settled) == 0 {
		w.base = tag
	}
	if tag < w.base {
		grow := make([]bool, w.base-tag, int(w.base-tag)+len(w.settled))
		for i := range grow {
			grow[i] = true
		}
		w.settled = append(grow, w.settled...)
		w.base = tag
	}
	for w.base+uint64(len(w.settled)) <= tag {
		w.settled = append(w.settled, true)
	}
	w.settled[tag-w.base] = false
}

func (w *tagWindow) compact() {
	n := 0
	for n < len(w.settled) && w.settled[n] {
		n++
	}
	w.base += uint64(n)
	if n == len(w.settled) {
		// Empty: reuse the array from its start rather than allocate a new
		// one for the next delivery (prefetch bounds its size).
		w.settled = w.settled[:0]
		return
	}
	w.settled = w.settled[n:]
}

// The kinds of settlement, for the checks and errors that need a Method.
var (
	ackKind    Method = &BasicAck{}
	nackKind   Method = &BasicNack{}
	rejectKind Method = &BasicReject{}
)
