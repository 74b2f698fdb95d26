package amqp

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Consumer receives the deliveries of one basic.consume subscription. Read
// them with [Consumer.Next] or range over [Consumer.Deliveries]. It is safe
// for concurrent use.
//
// Deliveries are buffered per consumer. The buffer is bounded: with manual
// acknowledgements the server sends at most the prefetch count set by
// [Channel.Qos]; past BufferLimit deliveries (no-ack consumers, or no
// prefetch) the connection stops reading from the socket until the
// application catches up, so memory stays bounded and TCP pushes back on the
// server. While the reader waits, nothing else on the connection is read,
// so read deliveries promptly or set a prefetch.
type Consumer struct {
	ch          *Channel
	tag         string
	noAck       bool
	onCancel    func(consumerTag string)
	limit       int
	resubscribe bool
	recycle     bool
	rejectBad   bool   // ConsumerOptions.RejectMalformed
	seq         uint64 // creation order: a recovery subscribes consumers in this order

	args BasicConsume // for subscribing again; Queue follows a renamed queue; guarded by mu

	mu         sync.Mutex
	queue      []*Delivery   // buffered deliveries; head at queue[head]
	head       int           //
	ready      chan struct{} // cap 1: a delivery arrived or the consumer ended
	waiting    int           // Next calls blocked on ready: push signals only then
	room       chan struct{} // non-nil while the reader waits for the queue to shrink; closed by Next
	done       chan struct{}
	err        error  // why the consumer ended, set before done is closed
	abandoned  bool   // the Consume call gave up
	registered bool   // consume-ok arrived and the channel routes deliveries here
	cancelling bool   // Cancel was called: the reader must not wait for room, or cancel-ok could never be read
	wakeQueued bool   // push asked for a wake of a waiting Next: c is on its reader's wakeList
	signals    uint32 // tokens sent on ready (wrapping): tests count the hand-offs to Next with it
}

// DefaultBufferLimit is the number of deliveries a consumer buffers before
// the connection stops reading, when ConsumerOptions.BufferLimit is 0.
const DefaultBufferLimit = 4096

// ConsumerOptions configure a consumer beyond the basic.consume arguments.
type ConsumerOptions struct {
	// OnCancel, when set, is called with the consumer tag if the server
	// cancels the consumer (its queue was deleted, or the queue's node went
	// down); the consumer then ends with ErrConsumerCancelled. When nil, the
	// consumer ends with an error matching ErrCancelledByServer instead.
	// It runs on the connection's callback goroutine, never on the reader.
	OnCancel func(consumerTag string)

	// BufferLimit is how many deliveries may wait in the consumer's buffer
	// before the connection stops reading. Zero means DefaultBufferLimit.
	BufferLimit int

	// Resubscribe makes a consumer that the server cancels (its queue was
	// deleted, or the queue's node went down) subscribe again instead of
	// ending: with the backoff of Config.Recovery (or its defaults), the
	// library checks that the queue exists (passively, on a channel of its
	// own) and then sends basic.consume with the same tag and arguments,
	// until it succeeds or the consumer is cancelled or its channel ends.
	// OnCancel, if set, is still told of each cancellation; OnRecovery
	// listeners are told of each failed attempt and of the success.
	Resubscribe bool

	// Recycle lets the application hand each delivery back with
	// [Delivery.Release] once done with it, so that its memory is reused
	// for a later message instead of allocating a new Delivery (and body)
	// per message. Deliveries that are not released are simply collected
	// as usual. Off by default: a released delivery must not be touched
	// again, which is easy to get wrong; see Release.
	Recycle bool

	// RejectMalformed makes Next reject (basic.reject without requeue) a
	// delivery whose content header cannot be decoded ([ContentError])
	// instead of returning it, so the broker dead-letters it (when the queue
	// has a dead-letter exchange) or drops it, and Next goes on to the next
	// delivery. Without it, Next returns such a delivery together with its
	// ContentError, and the application settles it. A delivery that cannot be
	// rejected (no-ack consumers, or the rejection fails) is returned with
	// its error as if the option were off.
	RejectMalformed bool
}

var consumerSeq atomic.Uint64

// Consume starts a consumer (basic.consume) and waits for consume-ok. An
// empty ConsumerTag asks the server to choose one; [Consumer.Tag] returns it.
// NoWait is not allowed here: the consumer needs the server's consume-ok.
func (ch *Channel) Consume(ctx context.Context, args BasicConsume) (*Consumer, error) {
	return ch.ConsumeWith(ctx, args, ConsumerOptions{})
}

// ConsumeWith is Consume with options: an OnCancel callback and the buffer limit.
func (ch *Channel) ConsumeWith(ctx context.Context, args BasicConsume, opt ConsumerOptions) (*Consumer, error) {
	if args.NoWait {
		return nil, ErrNoWaitConsume
	}
	c := &Consumer{
		ch:          ch,
		tag:         args.ConsumerTag,
		noAck:       args.NoAck,
		onCancel:    opt.OnCancel,
		limit:       opt.BufferLimit,
		resubscribe: opt.Resubscribe,
		recycle:     opt.Recycle,
		rejectBad:   opt.RejectMalformed,
		seq:         consumerSeq.Add(1),
		args:        args,
		ready:       make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	if c.limit <= 0 {
		c.limit = DefaultBufferLimit
	}
	_, err := ch.call(ctx, &args, callOpts{hook: ch.registerOnConsumeOk(c)})
	if err != nil {
		// The caller is gone. If consume-ok beat us to it, cancel now;
		// otherwise the hook will, should consume-ok still come.
		ch.mu.Lock()
		c.mu.Lock()
		c.abandoned = true
		registered := c.registered
		c.mu.Unlock()
		if registered && ch.consumers[c.tag] == c {
			c.stopBackpressure()
			ch.cancelAbandonedLocked(c)
		}
		ch.mu.Unlock()
		return nil, err
	}
	return c, nil
}

// registerOnConsumeOk returns the hook of a basic.consume for c, the first
// or a resubscription (ConsumerOptions.Resubscribe): on the reader, before
// any delivery for the tag can be read, it routes the tag's deliveries to c,
// or cancels c at once if its caller gave up or it ended meanwhile.
func (ch *Channel) registerOnConsumeOk(c *Consumer) func(callResult) {
	return func(r callResult) {
		if r.err != nil {
			return
		}
		ch.mu.Lock()
		defer ch.mu.Unlock()
		c.mu.Lock()
		c.tag = r.m.(*BasicConsumeOk).ConsumerTag // chosen by the server if empty
		c.args.ConsumerTag = c.tag
		unwanted := c.abandoned || c.err != nil
		c.registered = true
		c.mu.Unlock()
		ch.addConsumerLocked(c)
		if unwanted {
			c.stopBackpressure()
			ch.cancelAbandonedLocked(c)
		}
	}
}

// cancelAbandonedLocked cancels a consumer nobody will read and hands its
// unread deliveries back. ch.mu must be held.
func (ch *Channel) cancelAbandonedLocked(c *Consumer) {
	_ = ch.sendNowLocked(&BasicCancel{ConsumerTag: c.tag}, &pendingCall{hook: func(r callResult) {
		if r.err != nil {
			c.end(r.err, dropAckableBuffered) // the channel ended: nothing to requeue on it
			return
		}
		ch.removeConsumer(c, ErrConsumerCancelled)
		ch.requeueUnread(c)
	}})
}

// Tag returns the consumer tag.
func (c *Consumer) Tag() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tag
}

// Channel returns the channel the consumer belongs to.
func (c *Consumer) Channel() *Channel { return c.ch }

// Done returns a channel that is closed when the consumer has ended. Deliveries
// buffered before the end can still be read with Next.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Err returns nil while the consumer runs, and afterwards why it ended.
func (c *Consumer) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Next returns the next delivery, waiting for one bounded by ctx. Once the
// consumer has ended and its buffer is empty, it returns why the consumer
// ended: ErrConsumerCancelled after Cancel, or the channel's or connection's error.
//
// When the consumer is its connection's only one, a Next that finds the
// buffer empty may read the socket itself instead of waiting for the
// reader goroutine to hand it deliveries (see "Consuming" in the package
// documentation); ctx bounds that read as it bounds the wait, and the
// consumer's end interrupts it.
//
// A message whose content header could not be decoded is returned as a
// non-nil Delivery together with a [*ContentError] (see
// [ConsumerOptions.RejectMalformed]): settle it like any other and call Next
// again; the consumer goes on.
func (c *Consumer) Next(ctx context.Context) (*Delivery, error) {
	for {
		d, err := c.next(ctx)
		if d != nil && c.ch.traces != nil {
			c.ch.traceReceived(ctx, d)
		}
		if d == nil || d.err == nil {
			return d, err
		}
		err = d.err
		if c.rejectBad && !d.noAck {
			rerr := d.Reject(RejectOptions{})
			if rerr == nil || errors.Is(rerr, ErrStaleDelivery) { // stale: the server requeued it already
				c.ch.logMalformed(d, "rejected")
				continue
			}
			err = errors.Join(d.err, rerr) // the application settles it
		}
		c.ch.logMalformed(d, "handed out")
		return d, err
	}
}

// next takes the next buffered delivery, waiting for one bounded by ctx.
func (c *Consumer) next(ctx context.Context) (*Delivery, error) {
	for {
		c.mu.Lock()
		if c.head < len(c.queue) {
			d := c.queue[c.head]
			c.queue[c.head] = nil
			c.head++
			if c.head == len(c.queue) {
				c.queue, c.head = c.queue[:0], 0
			}
			if c.room != nil && len(c.queue)-c.head < c.limit {
				close(c.room)
				c.room = nil
			}
			if c.waiting > 0 && c.head < len(c.queue) {
				c.signalLocked() // another Next waits and there is more
			}
			c.mu.Unlock()
			return d, nil
		}
		err := c.err
		c.mu.Unlock()
		l := c.ch.link.Load()
		if err != nil {
			if l != nil && l.lead.lessee.Load() == c {
				l.needReader() // nobody reads for an ended consumer
			}
			return nil, err
		}
		if l != nil && l.takeLead(c) {
			got, err := l.lead.rd.Load().lead(ctx, c)
			if err != nil {
				return nil, err
			}
			if got {
				continue
			}
		}
		c.mu.Lock()
		if c.head < len(c.queue) || c.err != nil {
			c.mu.Unlock()
			continue
		}
		c.waiting++
		c.mu.Unlock()
		if l != nil {
			l.needReader() // the socket may be lent to a consumer that does not read now
		}
		select {
		case <-c.ready:
		case <-c.done: // every waiter sees the end, not just the one a token wakes
		case <-ctx.Done():
			err = ctx.Err()
		}
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// Deliveries returns an iterator over the consumer's deliveries, for use in a
// range loop. Leaving the loop early does not cancel the consumer. A message
// whose content header could not be decoded is yielded with its
// [*ContentError] and a non-nil Delivery, and the loop goes on.
//
// How the loop ends tells who ended the consumer:
//   - the application itself, with [Consumer.Cancel], [Channel.Close] or
//     [Connection.Close] (from this or any goroutine): the loop ends
//     without yielding an error, once the deliveries still buffered have
//     been yielded (closing the channel or connection drops those that
//     need an acknowledgement: the server requeues them). So does a server
//     cancel that ConsumerOptions.OnCancel was told of.
//   - anything else: the loop yields the error and then ends. That is a
//     channel error (an [*Error]), the connection's failure or the
//     server's close (matching [ErrClosed] and the cause), a server cancel
//     without OnCancel ([ErrCancelledByServer]), or ctx's error when ctx
//     ends first.
//
// [Consumer.Next] returns the same errors in every case; see
// [EndedByApplication] for telling them apart there.
func (c *Consumer) Deliveries(ctx context.Context) iter.Seq2[*Delivery, error] {
	return func(yield func(*Delivery, error) bool) {
		for {
			d, err := c.Next(ctx)
			if err != nil && EndedByApplication(err) {
				return
			}
			if !yield(d, err) || (err != nil && d == nil) { // with a delivery, err is its ContentError: go on
				return
			}
		}
	}
}

// Cancel cancels the consumer (basic.cancel) and waits for cancel-ok,
// bounded by ctx. Deliveries that arrived before cancel-ok stay readable with
// Next, which then returns ErrConsumerCancelled. Cancelling an ended consumer
// returns nil.
func (c *Consumer) Cancel(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	c.stopBackpressure()
	tag := c.Tag()
	ch := c.ch
	r, err := ch.call(ctx, &BasicCancel{ConsumerTag: tag}, callOpts{hook: func(r callResult) {
		if r.err == nil {
			ch.removeConsumer(c, ErrConsumerCancelled)
			if ch.recording() {
				ch.conn.consumerCancelled(c.consumeArgs().Queue)
			}
		}
	}})
	if err != nil && c.Err() != nil {
		return nil // it ended meanwhile, which is what the caller wanted
	}
	if err != nil {
		if !r.queued { // basic.cancel never went out
			// Nothing went out: the consumer runs on as before, with its
			// backpressure, and a recovery subscribes it again.
			c.mu.Lock()
			c.cancelling = false
			c.mu.Unlock()
		}
	}
	return err // (if sent, backpressure stays off: the cancel may still be in flight)
}

func (c *Consumer) signalLocked() {
	select {
	case c.ready <- struct{}{}:
		c.signals++
	default:
	}
}

// stopBackpressure lets the reader go past a full buffer from now on: the
// consumer is being cancelled or its channel closed, and the reader must
// read on to see the reply.
func (c *Consumer) stopBackpressure() {
	c.mu.Lock()
	c.cancelling = true
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
	c.mu.Unlock()
}

// push buffers a delivery, or reports that the buffer is full (the reader
// then waits on the returned channel before reading on).
func (c *Consumer) push(d *Delivery) (full chan struct{}, wake bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == cap(c.queue) && c.head > 0 {
		// Full, with read slots at the front (a reader that never quite
		// catches up): slide the unread down rather than grow for ever.
		n := copy(c.queue, c.queue[c.head:])
		clear(c.queue[n:])
		c.queue, c.head = c.queue[:n], 0
	}
	c.queue = append(c.queue, d)
	if c.waiting > 0 && !c.wakeQueued { // a busy reader of Next finds it without being woken
		c.wakeQueued, wake = true, true
	}
	if len(c.queue)-c.head >= c.limit && c.err == nil && !c.cancelling {
		if c.room == nil {
			c.room = make(chan struct{})
		}
		return c.room, wake
	}
	return nil, wake
}

// wake signals a waiting Next, once push has reported wake.
func (c *Consumer) wake() {
	c.mu.Lock()
	c.wakeQueued = false
	if c.waiting > 0 {
		c.signalLocked()
	}
	c.mu.Unlock()
}

// wakeList holds the consumers whose waiting Next is to be woken, for one
// link's reader, which alone touches it. A delivery does not wake its
// consumer's goroutine itself: the reader wakes each consumer once for all
// the deliveries one socket read brought (wakeAll runs before the reader
// reads the socket again, before it waits for a consumer's room, and when it
// exits), and after wakeBatchFrames frames of a long read (deliveries, or
// anything else: acks of a publisher on the same connection), so that the
// consumers start on the batch while the reader goes on. Against RabbitMQ
// that halves the parks of the application's goroutine per message.
type wakeList struct {
	pending []*Consumer
	batched int // frames handled since the first entry in pending
}

// wakeBatchFrames is how many frames the reader handles, at most, between a
// waiting consumer's delivery and its wake-up: 64 small deliveries (a
// method, a header and a body frame each).
const wakeBatchFrames = 3 * 64

// delivered records a delivery pushed to c, and whether push asked for c's
// wake.
func (w *wakeList) delivered(c *Consumer, wake bool) {
	if wake {
		w.pending = append(w.pending, c)
	}
}

// dispatched counts a frame the reader has handled, and wakes the pending
// consumers once wakeBatchFrames were handled since the first of them.
func (w *wakeList) dispatched() {
	if len(w.pending) > 0 {
		if w.batched++; w.batched >= wakeBatchFrames {
			w.wakeAll()
		}
	}
}

// wakeAll signals every consumer on the list.
func (w *wakeList) wakeAll() {
	for i, c := range w.pending {
		c.wake()
		w.pending[i] = nil
	}
	w.pending, w.batched = w.pending[:0], 0
}

// bufferedOnEnd says what becomes of a consumer's buffered deliveries when
// it ends.
type bufferedOnEnd uint8

const (
	// keepBuffered leaves them readable with Next.
	keepBuffered bufferedOnEnd = iota
	// dropAckableBuffered drops those that need an acknowledgement, because
	// the channel closed under them (the server requeued them and their
	// tags are void); no-ack ones stay readable.
	dropAckableBuffered
)

// end stops the consumer with err; buffered says what becomes of the
// deliveries it buffered.
func (c *Consumer) end(err error, buffered bufferedOnEnd) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if buffered == dropAckableBuffered && !c.noAck {
		c.logDropped(len(c.queue)-c.head, err)
		clear(c.queue)
		c.queue, c.head = nil, 0
	}
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
	close(c.done)
	c.mu.Unlock()
	select {
	case c.ready <- struct{}{}:
	default:
	}
	if l := c.ch.link.Load(); l != nil && l.lead.lessee.Load() == c {
		l.interruptLead() // a Next reading the socket for c returns
	}
}

// consumeArgs returns the basic.consume that subscribes the consumer again.
func (c *Consumer) consumeArgs() BasicConsume {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.args
}

// dropAckable discards buffered deliveries that need an acknowledgement:
// their channel was lost, so the server requeued them and their tags are void.
func (c *Consumer) dropAckable() {
	if c.noAck {
		return
	}
	c.mu.Lock()
	c.logDropped(len(c.queue)-c.head, ErrConnectionLost)
	clear(c.queue)
	c.queue, c.head = c.queue[:0], 0
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
	c.mu.Unlock()
}

// takeConsumersLocked removes every consumer from the channel. ch.mu must be held.
func (ch *Channel) takeConsumersLocked() []*Consumer {
	ch.lastConsumer = nil
	out := make([]*Consumer, 0, len(ch.consumers))
	for tag, c := range ch.consumers {
		out = append(out, c)
		delete(ch.consumers, tag)
	}
	ch.conn.consumerCount.Add(-int32(len(out)))
	return out
}

// addConsumerLocked routes the deliveries for c's tag to c. ch.mu must be
// held.
func (ch *Channel) addConsumerLocked(c *Consumer) {
	if _, ok := ch.consumers[c.tag]; !ok {
		ch.conn.consumerCount.Add(1)
	}
	ch.consumers[c.tag] = c
}

func (ch *Channel) removeConsumer(c *Consumer, err error) {
	ch.mu.Lock()
	ch.unregisterLocked(c)
	ch.mu.Unlock()
	c.end(err, keepBuffered)
}

// unregisterLocked stops routing deliveries to c, if it is registered.
// ch.mu must be held.
func (ch *Channel) unregisterLocked(c *Consumer) {
	if c == nil {
		return
	}
	if ch.consumers[c.tag] == c {
		delete(ch.consumers, c.tag)
		ch.conn.consumerCount.Add(-1)
	}
	if ch.lastConsumer == c {
		ch.lastConsumer = nil
	}
}

// deliver hands a basic.deliver to its consumer, on the reader goroutine:
// it stamps the assembled delivery with its tags and epoch, records the tag
// in the settlement window (a no-ack one as settled), and pushes it to the
// consumer's buffer, waiting for room when the buffer is full (the
// documented backpressure).
func (ch *Channel) deliver(m *BasicDeliver, d *Delivery) {
	d.ConsumerTag, d.DeliveryTag, d.Redelivered = m.ConsumerTag, m.DeliveryTag, m.Redelivered
	d.Exchange, d.RoutingKey = m.Exchange, m.RoutingKey
	ch.mu.Lock()
	c := ch.lastConsumer
	if c == nil || c.tag != m.ConsumerTag {
		c = ch.consumers[m.ConsumerTag]
		ch.lastConsumer = c
	}
	d.epoch = ch.epoch.Load()
	d.noAck = c == nil || c.noAck
	d.reusable = c != nil && c.recycle
	ch.settle.received(m.DeliveryTag, d.noAck)
	if c == nil {
		// A consumer stays registered until its cancel-ok, after which the
		// server sends it nothing more, so this is a tag we never had.
		ch.mu.Unlock()
		return
	}
	ch.mu.Unlock()
	full, wake := c.push(d)
	l := ch.link.Load()
	if l == nil { // (cannot be, on the reader; but never leave a Next unwoken)
		if wake {
			c.wake()
		}
		return
	}
	l.wake.delivered(c, wake)
	if full != nil && !ch.conn.closeRequested() {
		l.waitForRoom(full, c.done)
	}
}

// serverCancelled handles the server's basic.cancel for a consumer.
func (ch *Channel) serverCancelled(tag string) {
	ch.mu.Lock()
	c := ch.consumers[tag]
	ch.unregisterLocked(c)
	ch.mu.Unlock()
	if c == nil {
		return
	}
	if c.onCancel != nil {
		fn := c.onCancel
		ch.conn.events.push(func() { fn(tag) })
	}
	if c.resubscribe {
		ch.conn.wg.Add(1) // the reader is counted, so Close cannot be past its Wait
		go func() {
			defer ch.conn.wg.Done()
			ch.resubscribe(c)
		}()
		return
	}
	if c.onCancel != nil {
		c.end(ErrConsumerCancelled, keepBuffered)
		return
	}
	c.end(ErrCancelledByServer, keepBuffered)
}

// requeueUnread hands back to the server the unacknowledged deliveries of a
// consumer that nobody will read (its Consume call gave up before consume-ok).
func (ch *Channel) requeueUnread(c *Consumer) {
	c.mu.Lock()
	unread := c.queue[c.head:]
	c.queue, c.head = nil, 0
	c.mu.Unlock()
	if c.noAck || len(unread) == 0 {
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, d := range unread {
		ch.requeueLocked(d)
	}
}

// requeueLocked hands a delivery nobody will read back to the server
// (basic.reject with requeue), unless it is stale or already settled.
// ch.mu must be held.
func (ch *Channel) requeueLocked(d *Delivery) {
	if d.epoch == ch.epoch.Load() && ch.settle.settleOne(d.DeliveryTag) == nil {
		_ = ch.sendNowLocked(&BasicReject{DeliveryTag: d.DeliveryTag, Requeue: true}, nil)
	}
}

// resubscribe subscribes a consumer the server cancelled again
// (ConsumerOptions.Resubscribe), with backoff, until it succeeds or the
// consumer, its channel or the connection ends.
func (ch *Channel) resubscribe(c *Consumer) {
	rc := RecoveryConfig{}.withDefaults()
	if ch.conn.cfg.Recovery != nil {
		rc = *ch.conn.cfg.Recovery
	}
	// The loop ends when the consumer, its channel or the connection ends.
	ctx, stop := contextUntil(context.Background(), c.done, ch.done, ch.conn.closeCalled)
	defer stop()
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(rc.backoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			// Ended by its consumer (already ended), its channel, or Close:
			// unregistered as it is, nothing else would end it.
			err := ch.Err()
			if err == nil {
				err = ErrClosed
			}
			c.end(err, dropAckableBuffered)
			return
		}
		args := c.consumeArgs()
		entity := fmt.Sprintf("consumer %q on queue %q", args.ConsumerTag, args.Queue)
		err := ch.queueExists(ctx, args.Queue)
		if err == nil {
			_, err = ch.call(ctx, &args, callOpts{hook: ch.registerOnConsumeOk(c)})
		}
		if ctx.Err() != nil {
			continue // the select above ends the loop
		}
		if err != nil {
			ch.conn.emit(RecoveryEvent{Kind: RecoveryEntityFailed, Entity: entity, Err: err, Attempt: attempt})
			continue
		}
		ch.conn.emit(RecoveryEvent{Kind: RecoveryConsumerResubscribed, Entity: entity, Attempt: attempt})
		return
	}
}

// logDropped logs buffered deliveries a consumer dropped because their
// channel closed under them (Info: the server requeued them and will
// deliver them again). It runs under the consumer's lock, possibly on the
// reader: the record is queued.
func (c *Consumer) logDropped(n int, why error) {
	log := c.ch.conn.log
	if log == nil || n == 0 {
		return
	}
	ch, tag := int(c.ch.id), c.tag
	c.ch.conn.events.push(func() {
		log.LogAttrs(context.Background(), slog.LevelInfo, "amqp: buffered deliveries dropped; the server requeues them",
			slog.Int("channel", ch), slog.String("consumer_tag", tag), slog.Int("count", n), slog.Any("error", why))
	})
}
