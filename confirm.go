package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Confirmation is the outcome of one publish. It is never nil. In confirm
// mode ([Channel.ConfirmSelect]) it resolves when the server acks or nacks
// the message; outside confirm mode it is resolved at once, with
// Requested() false, since the server will say nothing.
type Confirmation struct {
	seq       uint64 // the publish sequence number (the ack's delivery tag); 0 outside confirm mode
	requested bool
	ch        *Channel // for Wait's progress signal; nil for confirmations resolved at birth

	// For matching a basic.return to this publish; guarded by ch.mu.
	mandatory         bool
	exchange, rkey    string
	returnedBeforeAck *Return       // the return matched to this publish, awaiting its ack
	msg               *Publishing   // kept for republishing after a connection loss (RecoveryConfig.Republish); guarded by ch.mu
	trace             *publishTrace // the PublishTracer's, ended at resolution; guarded by mu

	mu   sync.Mutex
	done chan struct{} // created on first need; closed when resolved
	fin  bool          // resolved
	err  error         // nil for ack; ErrNacked, a *ReturnedError or the channel's error otherwise
	ret  *Return       // set when the message was returned (mandatory and unroutable)
}

// settled is a resolved Confirmation for publishes outside confirm mode: it
// costs no allocation.
var settled = func() *Confirmation {
	c := &Confirmation{fin: true, done: make(chan struct{})}
	close(c.done)
	return c
}()

func failedConfirmation(err error) *Confirmation {
	c := &Confirmation{fin: true, err: err, done: make(chan struct{})}
	close(c.done)
	return c
}

// Requested reports whether the message was published in confirm mode, so
// that the server will ack or nack it.
func (c *Confirmation) Requested() bool { return c.requested }

// DeliveryTag returns the publish sequence number the server's ack or nack
// carries (0 outside confirm mode).
// After a connection recovery with RecoveryConfig.Republish it is the
// sequence number of the message's republication.
func (c *Confirmation) DeliveryTag() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// Done returns a channel closed when the outcome is known.
func (c *Confirmation) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.fin {
			close(c.done)
		}
	}
	if !c.fin && c.ch != nil {
		// The caller is about to wait for what the reader reads. When it
		// stops waiting is not known here, so unlike Wait this does not
		// hold off later leases: the lease timer bounds their delay.
		c.ch.conn.needReader()
	}
	return c.done
}

// Wait waits for the outcome, bounded by ctx. It returns nil when the server
// acked the message (or outside confirm mode); ErrNacked when it nacked it; a
// *ReturnedError (matching ErrReturned and e.g. ErrNoRoute) when the message
// was mandatory and returned unroutable; and the channel's *Error or the
// connection's error when the channel closed before the outcome was known —
// the message may or may not have been routed.
func (c *Confirmation) Wait(ctx context.Context) error {
	for {
		progress, fin, err := c.progress()
		if fin {
			return err
		}
		done := ctx.Done() // (before await: nothing between it and awaited may panic)
		c.ch.await()
		select {
		case <-progress:
			c.ch.awaited()
		case <-done:
			c.ch.awaited()
			return fmt.Errorf("amqp: waiting for publisher confirmation %d: %w", c.DeliveryTag(), ctx.Err())
		}
	}
}

// progress returns the outcome if known, or else the channel's progress
// signal, closed at the next ack, nack or failure on the channel. Waiting on
// one shared signal instead of a channel per confirmation saves an
// allocation per publish; waiters re-check on each ack frame.
func (c *Confirmation) progress() (<-chan struct{}, bool, error) {
	if c.ch == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, true, c.err
	}
	c.mu.Lock()
	fin, err := c.fin, c.err
	c.mu.Unlock()
	if fin { // resolved for good: no need for the channel's lock
		return nil, true, err
	}
	ch := c.ch
	ch.mu.Lock() // resolution happens under ch.mu: fin and the signal are consistent
	defer ch.mu.Unlock()
	c.mu.Lock()
	fin, err = c.fin, c.err
	c.mu.Unlock()
	if fin {
		return nil, true, err
	}
	if ch.confirmProgress == nil {
		ch.confirmProgress = make(chan struct{})
	}
	return ch.confirmProgress, false, nil
}

// signalConfirmProgressLocked wakes Wait calls after confirmations resolved.
// ch.mu must be held.
func (ch *Channel) signalConfirmProgressLocked() {
	if ch.confirmProgress != nil {
		close(ch.confirmProgress)
		ch.confirmProgress = nil
	}
}

// Acked reports whether the outcome is known and was an ack of a routed message.
func (c *Confirmation) Acked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fin && c.err == nil
}

// Returned returns the returned message, if the server returned it.
func (c *Confirmation) Returned() *Return {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ret
}

// resolve sets the outcome. A failure is recorded for WaitConfirms, so
// c.ch.mu must be held when c.ch is set (every resolution happens under it).
func (c *Confirmation) resolve(err error, ret *Return) {
	c.mu.Lock()
	if c.fin {
		c.mu.Unlock()
		return
	}
	c.fin, c.err, c.ret = true, err, ret
	if c.done != nil {
		close(c.done)
	}
	tr := c.trace
	c.trace = nil
	c.mu.Unlock()
	if err != nil && c.ch != nil {
		c.ch.confirmFailures.add(c)
	}
	if tr != nil {
		tr.confirmed(c, err, ret)
	}
}

// confirmTracker holds a channel's unconfirmed publishes in sequence order,
// so an ack or nack, even with multiple set, resolves its publishes in O(1)
// each. Guarded by the channel's mutex.
type confirmTracker struct {
	active  bool
	nextSeq uint64          // sequence number of the next publish; starts at 1
	base    uint64          // sequence number of pending[0]
	pending []*Confirmation // nil once resolved
	block   []Confirmation  // preallocated: one allocation per 64 publishes
}

func (ch *Channel) enterConfirmModeLocked() {
	if ch.confirmMode && ch.confirms.active {
		return
	}
	ch.confirmMode = true
	ch.confirms = confirmTracker{active: true, nextSeq: 1, base: 1}
}

// add registers the next publish.
func (t *confirmTracker) add(ch *Channel) *Confirmation {
	if len(t.block) == 0 {
		t.block = make([]Confirmation, 64)
	}
	c := &t.block[0]
	t.block = t.block[1:]
	c.seq, c.requested, c.ch = t.nextSeq, true, ch
	t.nextSeq++
	t.pending = append(t.pending, c)
	return c
}

// readd registers a publish again after it was republished on a recovered
// channel, with the next sequence number.
func (t *confirmTracker) readd(c *Confirmation) {
	c.mu.Lock()
	c.seq = t.nextSeq
	c.mu.Unlock()
	c.returnedBeforeAck = nil
	t.nextSeq++
	t.pending = append(t.pending, c)
}

// takePending removes and returns the outstanding publishes that can be
// republished (those whose message was kept), in sequence order.
func (t *confirmTracker) takePending() []*Confirmation {
	var out []*Confirmation
	for i, c := range t.pending {
		if c != nil && c.msg != nil {
			out = append(out, c)
			t.pending[i] = nil
		}
	}
	return out
}

// confirmReply is the server's verdict on publishes in confirm mode.
type confirmReply uint8

const (
	serverAck  confirmReply = iota // basic.ack: the broker took responsibility
	serverNack                     // basic.nack: it did not
)

// resolve settles tag, or with multiple every publish up to tag, and returns
// how many it settled.
func (t *confirmTracker) resolve(tag uint64, multiple bool, reply confirmReply) int {
	if tag < t.base || tag >= t.base+uint64(len(t.pending)) {
		return 0 // not ours: already resolved, or before a reopen
	}
	from := tag - t.base
	if multiple {
		from = 0
	}
	n := 0
	for i := from; i <= tag-t.base; i++ {
		c := t.pending[i]
		if c == nil {
			continue
		}
		var err error
		ret := c.returnedBeforeAck
		if ret != nil {
			err = &ReturnedError{Return: *ret}
		} else if reply == serverNack {
			err = ErrNacked
		}
		c.resolve(err, ret)
		c.msg = nil
		t.pending[i] = nil
		n++
	}
	t.compact()
	return n
}

func (t *confirmTracker) compact() {
	n := 0
	for n < len(t.pending) && t.pending[n] == nil {
		n++
	}
	t.base += uint64(n)
	if n == len(t.pending) {
		t.pending = t.pending[:0] // empty: reuse the array (its slots are nil)
		return
	}
	t.pending = t.pending[n:]
}

// matchReturn attaches a basic.return to the publish it belongs to, which
// its ack will then resolve as returned. A return carries no sequence
// number, but RabbitMQ sends returns in publish order and before the
// publish's ack, so it belongs to the earliest outstanding mandatory publish
// to the same exchange and routing key that has no return yet. (If a
// binding changed between two such publishes, so that an earlier one was
// routed and a later one returned, the two cannot be told apart.)
func (t *confirmTracker) matchReturn(r *Return) {
	for _, c := range t.pending {
		if c != nil && c.mandatory && c.returnedBeforeAck == nil && c.exchange == r.Exchange && c.rkey == r.RoutingKey {
			c.returnedBeforeAck = r
			return
		}
	}
}

// failAll resolves every outstanding publish with err and leaves confirm
// mode; a reopen enters it again with sequence numbers from 1.
func (t *confirmTracker) failAll(err error) {
	for _, c := range t.pending {
		if c != nil {
			c.resolve(err, nil)
			c.msg = nil
		}
	}
	*t = confirmTracker{}
}

// unconfirmed returns how many publishes await their ack or nack.
func (t *confirmTracker) unconfirmed() int {
	n := 0
	for _, c := range t.pending {
		if c != nil {
			n++
		}
	}
	return n
}

// confirmed handles the server's basic.ack or basic.nack on a confirm-mode channel.
func (ch *Channel) confirmed(tag uint64, multiple bool, reply confirmReply) {
	ch.mu.Lock()
	ch.confirms.resolve(tag, multiple, reply)
	ch.signalConfirmProgressLocked()
	listeners := ch.listeners.onAck
	if reply == serverNack {
		listeners = ch.listeners.onNack
	}
	ch.mu.Unlock()
	for _, fn := range listeners {
		ch.conn.events.push(func() { fn(tag, multiple) })
	}
}

// ConfirmSelect puts the channel in confirm mode (confirm.select): from now
// on the server acks or nacks every publish, and each [Confirmation] tells
// its outcome. Confirm mode is re-applied when the channel is reopened after a
// channel error. With NoWait the call returns once the request is queued.
func (ch *Channel) ConfirmSelect(ctx context.Context, args ConfirmSelect) error {
	_, err := ch.call(ctx, &args, callOpts{})
	return err
}

// OnAck registers fn to be called for every basic.ack the server sends in
// confirm mode, with the seed client's (deliveryTag, multiple) signature.
// Calls run in order on the connection's callback goroutine; a slow fn
// delays later callbacks but never loses one and never stalls the reader.
func (ch *Channel) OnAck(fn func(deliveryTag uint64, multiple bool)) {
	ch.mu.Lock()
	ch.listeners.onAck = append(ch.listeners.onAck, fn)
	ch.mu.Unlock()
}

// OnNack is OnAck for basic.nack.
func (ch *Channel) OnNack(fn func(deliveryTag uint64, multiple bool)) {
	ch.mu.Lock()
	ch.listeners.onNack = append(ch.listeners.onNack, fn)
	ch.mu.Unlock()
}

// Unconfirmed returns how many publishes on the channel await an ack or nack.
func (ch *Channel) Unconfirmed() int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.confirms.unconfirmed()
}

// confirmed ends the trace of a confirm-mode publish on the callback
// goroutine: resolve runs on the reader or under the channel's lock.
func (tr *publishTrace) confirmed(c *Confirmation, err error, ret *Return) {
	data := TracePublishEndData{DeliveryTag: c.seq, Err: err, Return: ret}
	var rerr *ReturnedError
	switch {
	case err == nil:
		data.Outcome = PublishAcked
	case err == ErrNacked:
		data.Outcome = PublishNacked
	case ret != nil || errors.As(err, &rerr):
		data.Outcome = PublishReturned
	default:
		data.Outcome = PublishLost
	}
	ch := c.ch
	ch.conn.events.push(func() { tr.end(ch, data) })
}

// confirmFailures holds a channel's failed publishes until a WaitConfirms
// reports them. Guarded by the channel's mutex.
type confirmFailures struct {
	failed  []*Confirmation
	omitted int
}

func (f *confirmFailures) add(c *Confirmation) {
	if len(f.failed) >= maxKeptFailures {
		f.omitted++
		return
	}
	f.failed = append(f.failed, c)
}

func (f *confirmFailures) take() ([]*Confirmation, int) {
	failed, omitted := f.failed, f.omitted
	*f = confirmFailures{}
	return failed, omitted
}

// maxKeptFailures bounds the failures a channel keeps for WaitConfirms: an
// application that never calls it must not grow memory without end.
const maxKeptFailures = 1024
