package amqp

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Delivery is a message received from the server: pushed to a consumer
// (basic.deliver) or fetched with [Channel.Get] (basic.get-ok).
type Delivery struct {
	ConsumerTag string // the consumer it was delivered to; "" for Get
	DeliveryTag uint64 // the channel-scoped tag that acknowledges it
	Exchange    string // the exchange it was published to
	RoutingKey  string // the routing key it was published with

	// MessageCount is, for Get, how many messages remained in the queue.
	MessageCount uint32
	Redelivered  bool // it was delivered before and not acknowledged

	// Packed next to the two fields above, so that a Delivery with a small
	// body fits a smaller allocation size class.
	noAck    bool // the server considers it acknowledged already
	reusable bool // its consumer has ConsumerOptions.Recycle: Release hands it back
	released bool // Release handed it back; set until the reader reuses it

	Properties
	Body []byte

	// epoch names the channel and the span of delivery tags the delivery
	// arrived in; acknowledgements from an older one are stale. One pointer
	// rather than a channel and a counter keeps room for err in the same
	// allocation size classes.
	epoch *epoch
	err   *ContentError // the content header could not be decoded; see Err
}

// epoch is one span of a channel's delivery tags. The server numbers
// deliveries afresh after a reopen, a basic.recover or a requeueing
// tx.rollback, and the channel then starts a new epoch.
type epoch struct{ ch *Channel }

// newEpochLocked starts a new span of delivery tags: deliveries from before
// become stale. ch.mu must be held (or ch not yet shared).
func (ch *Channel) newEpochLocked() {
	e := &epoch{ch: ch}
	ch.epoch.Store(e)
	if ch.traces != nil {
		ch.traceEpochEnded(e)
	}
}

// Errors from acknowledging a delivery. They are local: nothing is sent, and
// the channel stays open (the server would close it with 406 PRECONDITION_FAILED).
var (
	// ErrStaleDelivery: the delivery arrived before its channel was reopened
	// after a channel error (or before a reconnect); its tag means nothing
	// now. The server requeued it when the channel closed.
	ErrStaleDelivery = errors.New("amqp: delivery is from before its channel was reopened; its tag is no longer valid")
	// ErrNoAckDelivery: the delivery came to a no-ack consumer (or a Get
	// with NoAck); the server already considers it acknowledged.
	ErrNoAckDelivery = errors.New("amqp: delivery was consumed in no-ack mode and needs no acknowledgement")
	// ErrAlreadySettled: the delivery was already acked, nacked or rejected,
	// possibly by a multiple acknowledgement of a later delivery.
	ErrAlreadySettled = errors.New("amqp: delivery was already acknowledged")
	// ErrReleased: the delivery was handed back with [Delivery.Release]; it
	// can no longer be acknowledged (a multiple acknowledgement of a later
	// delivery still settles it).
	ErrReleased = errors.New("amqp: delivery was released for reuse and can no longer be acknowledged")
)

// Err returns nil for a normal delivery, and a [*ContentError] when the
// message's content header could not be decoded: the delivery then holds the
// properties that came before the fault and the whole body, and must still
// be settled. Next and Get return the same error alongside the delivery.
func (d *Delivery) Err() error {
	if d.err == nil {
		return nil
	}
	return d.err
}

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

// The kinds of settlement, for the checks and errors that need a Method.
var (
	ackKind    Method = &BasicAck{}
	nackKind   Method = &BasicNack{}
	rejectKind Method = &BasicReject{}
)

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

// Release hands the delivery back to the library, which reuses its memory
// (the Delivery and the array under Body) for a later message on the same
// channel instead of allocating. It only does so for deliveries of a
// consumer started with [ConsumerOptions.Recycle]; for any other delivery
// it does nothing, so it is always safe to call.
//
// After Release, the delivery must not be used any more, nor any slice of
// Body: the next message may overwrite them at any moment. Copy what you keep
// first. Acknowledge before releasing: Ack, Nack and Reject of a released
// delivery return ErrReleased until the delivery is reused; after that the
// same pointer is a different message, so releasing and then acknowledging
// can acknowledge the wrong message. A multiple acknowledgement of a later
// delivery still settles a released one. A second Release is ignored until
// the delivery is reused. Release must not be called concurrently with other
// use of the delivery. The race detector reports a use after Release as a
// data race with the reader goroutine once the delivery is reused.
//
// What a channel keeps for reuse is bounded (4096 deliveries, 4 MiB of
// bodies); past that, released deliveries or their bodies are left to the
// garbage collector.
func (d *Delivery) Release() {
	if !d.reusable || d.released {
		return
	}
	if d.epoch.ch.traces != nil {
		d.epoch.ch.traceReleased(d)
	}
	d.released = true
	d.epoch.ch.bin.put(d)
}

// deliveryBin holds a channel's released deliveries until the reader reuses
// them. The reader takes the whole bin at once into its own stash
// (assembly.spare), so it locks the bin once per batch, not per message.
type deliveryBin struct {
	n     atomic.Int32 // len(free): the reader skips the lock while the bin is empty
	mu    sync.Mutex
	free  []*Delivery
	bytes int // body capacity held by free
}

// What a bin keeps after a burst is bounded: at most maxBinned deliveries
// and maxBinnedBytes of body arrays. A delivery released past the byte bound
// is kept without its body array.
const (
	maxBinned      = DefaultBufferLimit // a consumer buffers this many by default: as many may be in flight
	maxBinnedBytes = 4 << 20
)

func (b *deliveryBin) put(d *Delivery) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.free) >= maxBinned {
		return
	}
	if c := cap(d.Body); b.bytes+c > maxBinnedBytes {
		d.Body = nil
	} else {
		b.bytes += c
	}
	b.free = append(b.free, d)
	b.n.Store(int32(len(b.free)))
}

// takeAll moves the bin's deliveries into stash, which must be empty, and
// gives the bin stash's array to fill next.
func (b *deliveryBin) takeAll(stash []*Delivery) []*Delivery {
	if b.n.Load() == 0 {
		return stash
	}
	b.mu.Lock()
	stash, b.free = b.free, stash[:0]
	b.n.Store(0)
	b.bytes = 0
	b.mu.Unlock()
	return stash
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

// assembly collects a content-bearing method's header and body frames.
type assembly struct {
	method Method      // basic.deliver, basic.return or basic.get-ok; nil when idle
	msg    *Delivery   // created when the header arrives
	size   uint64      // body size the header announced
	spare  []*Delivery // released deliveries taken from the channel's bin, reused before allocating
}

func (a *assembly) active() bool { return a.method != nil }

func (a *assembly) begin(m Method) { a.method, a.msg, a.size = m, nil, 0 }

// Bodies up to smallBody bytes are allocated together with their Delivery,
// in one allocation, in one of three sizes so that a tiny body does not pay
// for a large inline buffer. Each size fills an allocation size class with
// the 304-byte Delivery: 320, 352 and 448 bytes.
const (
	tinyBody  = 16
	shortBody = 48
	smallBody = 144
)

type deliveryWithTinyBody struct {
	d   Delivery
	buf [tinyBody]byte
}

type deliveryWithShortBody struct {
	d   Delivery
	buf [shortBody]byte
}

type deliveryWithBody struct {
	d   Delivery
	buf [smallBody]byte
}

// header takes the content header frame. It refuses a body larger than
// maxBody before allocating anything for it. Released deliveries in bin are
// reused before anything is allocated.
func (a *assembly) header(payload []byte, maxBody uint64, strings *stringCache, bin *deliveryBin) (done bool, err error) {
	if a.method == nil || a.msg != nil {
		return false, unexpectedFrame(0, "content header frame without a content method")
	}
	d := decoder{buf: payload, strings: strings}
	d.short() // class id
	d.short() // weight: unused, always 0
	size := d.longlong()
	if d.err != nil {
		return false, fmt.Errorf("decoding content header: %w", d.err)
	}
	if size > maxBody {
		return false, fmt.Errorf("%w: %s announced a %d-byte body, the limit is %d (Config.MaxBodySize)",
			ErrBodyTooLarge, a.method.MethodName(), size, maxBody)
	}
	a.msg = a.newDelivery(size, bin)
	// Straight into the delivery: no intermediate Properties to copy.
	a.msg.Properties.decode(&d)
	if err := d.finish(); err != nil {
		// The body size is known and the frames around it are intact, so
		// this costs the message, not the connection: it is assembled as
		// usual and handed over with the error.
		a.msg.err = &ContentError{Method: a.method.MethodName(), Header: bytes.Clone(payload), Err: err}
	}
	a.size = size
	return size == 0, nil
}

// newDelivery returns an empty Delivery whose Body has room for size bytes:
// a released one if there is one, else a new allocation.
func (a *assembly) newDelivery(size uint64, bin *deliveryBin) *Delivery {
	if len(a.spare) == 0 {
		a.spare = bin.takeAll(a.spare)
	}
	if n := len(a.spare); n > 0 {
		d := a.spare[n-1]
		a.spare[n-1] = nil
		a.spare = a.spare[:n-1]
		body := d.Body[:0] // the array Release handed back with it
		if uint64(cap(body)) < size {
			body = make([]byte, 0, size)
		}
		*d = Delivery{Body: body}
		return d
	}
	switch {
	case size <= tinyBody:
		x := &deliveryWithTinyBody{}
		x.d.Body = x.buf[:0:size]
		return &x.d
	case size <= shortBody:
		x := &deliveryWithShortBody{}
		x.d.Body = x.buf[:0:size]
		return &x.d
	case size <= smallBody:
		x := &deliveryWithBody{}
		x.d.Body = x.buf[:0:size]
		return &x.d
	}
	return &Delivery{Body: make([]byte, 0, size)}
}

// body appends a body frame, reporting when the body is complete.
func (a *assembly) body(payload []byte) (done bool, err error) {
	if a.msg == nil {
		return false, unexpectedFrame(0, "body frame without a content header")
	}
	if uint64(len(a.msg.Body))+uint64(len(payload)) > a.size {
		return false, &Error{Code: CodeFrameError, Connection: true,
			Reason: fmt.Sprintf("body frames exceed the %d bytes the content header announced", a.size)}
	}
	a.msg.Body = append(a.msg.Body, payload...)
	return uint64(len(a.msg.Body)) == a.size, nil
}

// take returns the completed method and message and resets the assembly.
func (a *assembly) take() (Method, *Delivery) {
	m, msg := a.method, a.msg
	a.method, a.msg, a.size = nil, nil, 0
	return m, msg
}
