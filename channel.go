package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Channel is an AMQP channel: a lightweight session multiplexed on a
// connection. It is safe for concurrent use: several goroutines may call
// methods at once and each gets its own reply, because replies are matched to
// requests in order.
//
// When the server closes the channel with a soft error (such as 404
// NOT_FOUND from a passive declare, or 406 PRECONDITION_FAILED), the call that
// caused it returns the [*Error], and the library answers close-ok, reopens
// the same channel number and re-applies its qos and confirm mode, so the same
// *Channel serves the next call. Consumers on it end with the error and
// outstanding publisher confirmations resolve with it; deliveries received
// before the reopen can no longer be acknowledged ([ErrStaleDelivery]).
type Channel struct {
	conn *Connection
	id   uint16
	// link is the socket incarnation the channel is open on. It changes only
	// under mu, when the channel is reattached after a connection recovery;
	// nil while the channel waits for a new one.
	link atomic.Pointer[link]

	mu        sync.Mutex
	calls     callQueue             // pending synchronous calls, in request order
	state     channelState          // see channelState
	err       error                 // why the channel ended; set before done is closed
	done      chan struct{}         // closed when the channel ends for good
	epoch     atomic.Pointer[epoch] // replaced (under mu) whenever delivery tags restart; deliveries point at theirs
	recovered chan struct{}         // while recovering: closed when the channel is usable again

	// State re-applied when the channel is reopened after a channel error.
	prefetch       *BasicQos  // last basic.qos with global=false (per consumer)
	globalPrefetch *BasicQos  // last basic.qos with global=true (per channel)
	confirmMode    bool       // confirm.select was sent
	txMode         bool       // tx.select was sent (re-applied by a connection recovery, not after a channel error)
	txWork         bool       // a publish or acknowledgement was sent in the open transaction
	txLost         bool       // a recovery discarded the open transaction's work: the next commit fails
	txSettled      []uint64   // tags settled in the open transaction, unsettled again by a rollback
	rollbacks      [][]uint64 // per tx.rollback awaiting its rollback-ok: the tags it will unsettle

	consumers    map[string]*Consumer // by consumer tag
	lastConsumer *Consumer            // the last delivery's consumer: most deliveries go to the same one
	confirms     confirmTracker
	settle       tagWindow // which delivery tags of this epoch are still unsettled
	// confirmProgress is closed (and cleared) whenever confirmations resolve,
	// waking Confirmation.Wait calls; created by the first waiter.
	confirmProgress chan struct{}
	confirmFailures confirmFailures // failed publishes no WaitConfirms has reported yet
	flow            gate            // shut while the server paused publishing (channel.flow active=false)

	opened      bool // open-ok arrived (on the current link)
	reopenSteps int  // replies of the reopen sequence still to come
	abandoned   bool // the Channel call that opened it gave up
	internal    bool // the library's own (recovery): not recovered, its declarations not recorded

	republish []*Confirmation // unconfirmed publishes kept across a connection loss (RecoveryConfig.Republish)

	listeners      channelListeners // guarded by mu
	allowImmediate atomic.Bool

	asm assembly  // reader-owned: the content being assembled
	rx  rxScratch // reader-owned: deliver, ack and nack are decoded into this, not new structs

	bin       deliveryBin                 // deliveries handed back by Release, for asm to reuse
	spareCall atomic.Pointer[pendingCall] // a completed call's entry and reply channel, for the next call

	traces *deliveryTraces // unsettled deliveries' trace contexts; nil without a DeliveryTracer
}

type channelState uint8

const (
	chOpen       channelState = iota // usable
	chReopening                      // reopened after a server close; calls queue behind the reopen
	chRecovering                     // its connection is being recovered; calls wait for recovered
	chClosing                        // Close sent channel.close; no new calls
	chClosed                         // ended for good
)

// Channel opens a new channel, bounded by ctx. Channel numbers are allocated
// from 1 up to the negotiated channel_max, rotating, and reused after a
// channel closes. If ctx ends before open-ok arrives, the channel the server
// opens anyway is closed again when it does.
func (c *Connection) Channel(ctx context.Context) (*Channel, error) {
	return c.channelWhenUp(ctx, false)
}

// channelWhenUp is Channel, also for the library's own (internal) channels.
func (c *Connection) channelWhenUp(ctx context.Context, internal bool) (*Channel, error) {
	for {
		if err := c.waitUp(ctx); err != nil {
			return nil, err
		}
		ch, err := c.openChannel(ctx, internal)
		var down errLinkDown
		if !errors.As(err, &down) {
			return ch, err
		}
		if err := down.l.waitDetached(ctx); err != nil {
			return nil, err
		}
	}
}

// errLinkDown reports that the current link has ended, before a recovery
// (or the connection's end) took over: wait for l's detachment and retry.
type errLinkDown struct{ l *link }

func (e errLinkDown) Error() string { return "amqp: connection lost: " + fmt.Sprint(e.l.err) }

func (e errLinkDown) Unwrap() error { return ErrConnectionLost }

// openChannel opens a channel on the current link without waiting for a
// recovery: recovery itself uses it.
// An internal channel is the library's own: recovery ends it rather than
// reopening it, and declarations on it are not recorded.
func (c *Connection) openChannel(ctx context.Context, internal bool) (*Channel, error) {
	ch, err := c.allocChannel(internal)
	if err != nil {
		return nil, err
	}
	_, err = ch.callWithHook(ctx, &ChannelOpen{}, func(r callResult) {
		if r.err != nil {
			return
		}
		ch.mu.Lock()
		defer ch.mu.Unlock()
		ch.opened = true
		if ch.abandoned {
			ch.closeAbandonedLocked()
		}
	})
	if err != nil {
		ch.abandonOpen(err)
		return nil, err
	}
	return ch, nil
}

func newChannel(c *Connection, id uint16) *Channel {
	ch := &Channel{conn: c, id: id, done: make(chan struct{}), consumers: map[string]*Consumer{}}
	ch.newEpochLocked()
	if c.tr.delivery != nil {
		ch.traces = &deliveryTraces{t: c.tr.delivery}
	}
	return ch
}

// ErrNoFreeChannel reports that every channel number up to channel_max is in use.
var ErrNoFreeChannel = errors.New("amqp: no free channel number (channel_max reached)")

func (c *Connection) allocChannel(internal bool) (*Channel, error) {
	c.chMu.Lock()
	defer c.chMu.Unlock()
	if c.ending {
		return nil, c.closedErr()
	}
	l := c.cur.Load()
	if l.ended() {
		// A channel added now could miss the recovery's retirement of l,
		// which lists the channels after l ended.
		return nil, errLinkDown{l}
	}
	n := min(int(l.channelMax), c.channels.limit)
	for i := 0; i < n; i++ {
		id := uint16((int(c.nextID)+i)%n + 1)
		if c.channels.get(id) == nil && !l.reserved[id] {
			ch := newChannel(c, id)
			ch.internal = internal // before anyone (retire) can see it
			ch.link.Store(l)
			c.channels.set(id, ch)
			c.nextID = id % uint16(n)
			return ch, nil
		}
	}
	return nil, ErrNoFreeChannel
}

// releaseChannel frees ch's number for reuse, unless a frame for it may still
// arrive (reserve), in which case the number is retired.
func (c *Connection) releaseChannel(ch *Channel, reserve bool) {
	c.chMu.Lock()
	defer c.chMu.Unlock()
	if c.channels.get(ch.id) == ch {
		c.channels.set(ch.id, nil)
	}
	if l := ch.link.Load(); reserve && l != nil && !l.ended() {
		if l.reserved == nil {
			l.reserved = map[uint16]bool{}
		}
		l.reserved[ch.id] = true
	}
}

// abandonOpen cleans up after a channel.open whose caller gave up or failed.
// If open-ok may still come, the hook in Channel closes the channel then.
func (ch *Channel) abandonOpen(cause error) {
	ch.mu.Lock()
	ch.abandoned = true
	switch {
	case ch.opened: // open-ok came just after the caller gave up
		ch.closeAbandonedLocked()
		ch.mu.Unlock()
	case ch.calls.len() > 0 && ch.state != chClosed: // still waiting for open-ok
		ch.mu.Unlock()
	default:
		ch.mu.Unlock()
		ch.finish(fmt.Errorf("%w: %w", ErrClosed, cause))
	}
}

// closeAbandonedLocked closes a channel that was opened for a caller who is
// gone. ch.mu must be held.
func (ch *Channel) closeAbandonedLocked() {
	ch.state = chClosing
	ch.sendLocked(&ChannelClose{ReplyCode: CodeSuccess, ReplyText: "open abandoned"}, func(callResult) {
		ch.finish(ErrClosed)
	})
}

// ID returns the channel number.
func (ch *Channel) ID() uint16 { return ch.id }

// Connection returns the connection the channel belongs to.
func (ch *Channel) Connection() *Connection { return ch.conn }

// Done returns a channel that is closed when the channel has ended for good:
// closed by Close, by its connection ending, or by a failure to reopen after a
// channel error. A channel error that was recovered from does not close it.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err returns nil while the channel is usable, and afterwards why it ended.
func (ch *Channel) Err() error {
	select {
	case <-ch.done:
		return ch.err
	default:
		return nil
	}
}

// Close closes the channel (channel.close, then close-ok), bounded by ctx.
// Consumers on it end and pending confirmations resolve with ErrClosed. It is
// idempotent: closing a channel that has ended returns nil.
func (ch *Channel) Close(ctx context.Context) error {
	ch.mu.Lock()
	if ch.state == chClosing || ch.state == chClosed {
		ch.mu.Unlock()
		select {
		case <-ch.done:
			return nil
		case <-ctx.Done():
			return ch.ctxError(&ChannelClose{}, ctx.Err())
		}
	}
	if ch.state == chRecovering && ch.link.Load() == nil {
		// Nothing to tell a server that has not seen the channel yet. (Once
		// the recovery has begun to reopen it, it is closed like any other.)
		ch.mu.Unlock()
		ch.finish(ErrClosed)
		return nil
	}
	ch.state = chClosing
	// The reader may be waiting for room in a consumer's buffer; it must
	// go on, or it would never read the close-ok.
	for _, c := range ch.consumers {
		c.stopBackpressure()
	}
	req := &ChannelClose{ReplyCode: CodeSuccess, ReplyText: "client closed the channel"}
	p := &pendingCall{req: req, reply: make(chan callResult, 1)}
	err := ch.appendLocked(ch.link.Load(), req, p)
	ch.mu.Unlock()
	if err != nil {
		ch.finish(ErrClosed)
		return nil
	}
	select {
	case r := <-p.reply:
		ch.finish(ErrClosed)
		if r.err != nil && !errors.Is(r.err, ErrClosed) {
			return r.err
		}
		return nil
	case <-ctx.Done():
		// The close-ok may still come; the number is retired rather than reused.
		ch.finishAndReserve(ErrClosed)
		return ch.ctxError(&ChannelClose{}, ctx.Err())
	}
}

// usableLocked reports why a new call cannot be made on the channel now.
func (ch *Channel) usableLocked(m Method) error {
	switch ch.state {
	case chClosing:
		return fmt.Errorf("%w: channel %d is closing", ErrClosed, ch.id)
	case chClosed:
		return ch.err
	case chRecovering:
		switch m.(type) {
		case *BasicAck, *BasicNack, *BasicReject:
			if ch.opened {
				// Deliveries already flow to consumers the recovery has
				// subscribed again; acking them must not wait for the rest
				// of the recovery, which may itself wait for the reader
				// that those unacknowledged deliveries hold up.
				return nil
			}
		}
		return errRecovering
	}
	return nil
}

// finish ends the channel for good with err: pending calls, consumers and
// confirmations get it, and the channel number is freed.
func (ch *Channel) finish(err error) { ch.end(err, false) }

func (ch *Channel) finishAndReserve(err error) { ch.end(err, true) }

func (ch *Channel) end(err error, reserve bool) {
	ch.mu.Lock()
	if ch.state == chClosed {
		ch.mu.Unlock()
		return
	}
	ch.state = chClosed
	ch.err = err
	close(ch.done)
	if ch.recovered != nil {
		close(ch.recovered) // waiters see done
		ch.recovered = nil
	}
	calls := ch.calls.drain()
	consumers := ch.takeConsumersLocked()
	ch.confirms.failAll(err)
	for _, conf := range ch.republish { // kept across a connection loss, never sent again
		conf.resolve(err, nil)
		conf.msg = nil
	}
	ch.republish = nil
	ch.signalConfirmProgressLocked()
	ch.flow.open() // waiting publishers see done
	ch.mu.Unlock()
	for _, p := range calls {
		p.resolve(callResult{err: err})
	}
	for _, c := range consumers {
		c.end(err, true)
	}
	if ch.traces != nil {
		ch.traceEpochEnded(nil)
	}
	if ch.id != 0 {
		ch.conn.releaseChannel(ch, reserve)
	}
}

// handleFrame processes one frame for this channel on the reader goroutine.
// It never blocks on user code; an error it returns ends the connection.
func (ch *Channel) handleFrame(l *link, f Frame) error {
	switch f.Type {
	case FrameMethod:
		if ch.asm.active() {
			return unexpectedFrame(ch.id, "method frame in the middle of a message")
		}
		m, err := decodeMethodInto(f.Payload, &l.strings, &ch.rx)
		if err != nil {
			return err
		}
		if m.hasContent() {
			ch.asm.begin(m)
			return nil
		}
		return ch.handleMethod(m)
	case FrameHeader:
		done, err := ch.asm.header(f.Payload, ch.conn.cfg.MaxBodySize, &l.strings, &ch.bin)
		if err != nil || !done {
			return err
		}
	case FrameBody:
		done, err := ch.asm.body(f.Payload)
		if err != nil || !done {
			return err
		}
	}
	m, msg := ch.asm.take()
	return ch.handleContent(m, msg)
}

func unexpectedFrame(id uint16, what string) error {
	return &Error{Code: CodeUnexpectedFrame, Connection: true, Reason: fmt.Sprintf("%s on channel %d", what, id)}
}

// handleMethod dispatches a method without content.
func (ch *Channel) handleMethod(m Method) error {
	switch m := m.(type) {
	case *ChannelClose:
		ch.serverClosed(m)
		return nil
	case *BasicAck:
		ch.confirmed(m.DeliveryTag, m.Multiple, false)
		return nil
	case *BasicNack:
		ch.confirmed(m.DeliveryTag, m.Multiple, true)
		return nil
	case *BasicCancel:
		ch.serverCancelled(m.ConsumerTag)
		return nil
	case *ChannelFlow:
		ch.serverFlow(m.Active)
		return nil
	}
	if isReplyKey(m.key()) {
		return ch.complete(m, nil)
	}
	return unexpectedFrame(ch.id, "unexpected "+m.MethodName())
}

// handleContent dispatches a method whose content has been assembled.
func (ch *Channel) handleContent(m Method, msg *Delivery) error {
	switch m := m.(type) {
	case *BasicDeliver:
		ch.deliver(m, msg)
		return nil
	case *BasicReturn:
		ch.returned(m, msg)
		return nil
	case *BasicGetOk:
		ch.gotMessage(m, msg)
		return ch.complete(m, msg)
	}
	return unexpectedFrame(ch.id, "unexpected content for "+m.MethodName())
}

// serverClosed handles the server's channel.close: answer close-ok, fail what
// was pending, and reopen the channel with its state re-applied — unless the
// application was closing it, or it failed while being reopened.
func (ch *Channel) serverClosed(m *ChannelClose) {
	cause := &Error{Code: m.ReplyCode, Reason: m.ReplyText, ClassID: m.FailingClassID, MethodID: m.FailingMethodID, Server: true}
	ch.mu.Lock()
	if ch.state == chClosed {
		// Ended meanwhile (the connection is going, or Close gave up on
		// it); the reader still held it from the table.
		ch.mu.Unlock()
		return
	}
	ch.sendLocked(&ChannelCloseOk{}, nil)
	ch.observeChannelError(cause) // queued for the callback goroutine: takes no lock of ch's
	if ch.state == chRecovering {
		// A step of the connection recovery failed: the recovery sees the
		// error in its call and opens the channel again, from scratch.
		ch.opened = false
		// Publishes resent before the close fail with it, as on any channel
		// error (one of them may be its cause: resending them again could
		// fail the same way forever); those not yet resent stay kept.
		ch.forgetAndUnlock(cause, cause, false)
		return
	}
	// A close during Close, in answer to a reopen step, or before the channel
	// ever opened is final: reopening again could fail the same way forever.
	if ch.state == chClosing || ch.reopenSteps > 0 || !ch.opened {
		// If our close crossed the server's, the server may still answer it
		// with a close-ok: retire the number so that cannot hit a new channel.
		crossed := ch.state == chClosing
		ch.mu.Unlock()
		ch.end(fmt.Errorf("%w: %w", ErrClosed, cause), crossed)
		return
	}
	// Everything sent before the server's close was discarded by it.
	calls := ch.calls.drain()
	consumers := ch.takeConsumersLocked()
	ch.resetForReopenLocked(cause, false)
	ch.state = chReopening // (reopenSteps is 0: a close during a reopen ended the channel above)
	// Pipelined: the server handles these in order, and any call made from
	// now on is queued behind them, so it runs on the reopened channel.
	ch.sendReopenStepLocked(&ChannelOpen{})
	if ch.globalPrefetch != nil {
		ch.sendReopenStepLocked(ch.globalPrefetch)
	}
	if ch.prefetch != nil {
		ch.sendReopenStepLocked(ch.prefetch)
	}
	if ch.confirmMode {
		ch.sendReopenStepLocked(&ConfirmSelect{})
		ch.enterConfirmModeLocked() // sequence numbers start again at 1
	}
	ch.txMode, ch.txWork, ch.txLost = false, false, false // a channel error ends the transaction
	listeners := ch.listeners.onError
	ch.mu.Unlock()

	for _, p := range calls {
		p.resolve(callResult{err: cause})
	}
	for _, c := range consumers {
		c.end(cause, true)
	}
	for _, fn := range listeners {
		ch.conn.events.push(func() { fn(cause) })
	}
}

func (ch *Channel) sendReopenStepLocked(m Method) {
	ch.reopenSteps++
	ch.sendLocked(m, ch.reopenStep)
}

// reopenStep runs as each reply of the reopen sequence arrives; the channel
// is usable again once the last one is in.
func (ch *Channel) reopenStep(r callResult) {
	if r.err != nil {
		return // the channel or connection ended; finish already ran
	}
	ch.mu.Lock()
	ch.reopenSteps--
	if ch.state == chReopening && ch.reopenSteps == 0 {
		ch.state = chOpen
	}
	ch.mu.Unlock()
}

// noteReplyLocked records state that the successful reply to p
// establishes, for re-application after a reopen. ch.mu must be held.
func (ch *Channel) noteReplyLocked(p *pendingCall) {
	if p.reply == nil {
		return // the library's own calls (a reopen's steps) record nothing
	}
	switch req := p.req.(type) {
	case *BasicQos:
		// Recorded on success only: re-applying a qos the server refused
		// would fail the reopen the same way.
		q := *req
		if q.Global {
			ch.globalPrefetch = &q
		} else {
			ch.prefetch = &q
		}
	case *BasicRecover:
		// The server requeued every unacknowledged delivery: their tags are
		// void, and the redeliveries that follow get new ones.
		ch.newEpochLocked()
		ch.settle.reset()
		ch.txSettled = nil
	case *TxRollback:
		// The acknowledgements of the transaction were discarded: those
		// deliveries are unacknowledged again and may be settled anew.
		if len(ch.rollbacks) > 0 {
			for _, tag := range ch.rollbacks[0] {
				ch.settle.unsettle(tag)
			}
			ch.rollbacks = ch.rollbacks[1:]
		}
	}
}

// noteSentLocked records mode changes as their request is queued: the server
// applies confirm mode to every publish sent after confirm.select, before its
// select-ok arrives (and with no-wait none arrives).
func (ch *Channel) noteSentLocked(m Method) {
	switch m := m.(type) {
	case *ConfirmSelect:
		ch.enterConfirmModeLocked()
	case *TxSelect:
		ch.txMode = true
	case *TxCommit:
		ch.txSettled = nil // acks after this belong to the next transaction
		ch.txWork = false
	case *TxRollback:
		// Snapshot now: acks sent after the rollback are not rolled back.
		ch.rollbacks = append(ch.rollbacks, ch.txSettled)
		ch.txSettled = nil
		ch.txWork = false
	case *BasicRecoverAsync:
		// No reply marks the point, so the tags handed out so far are void
		// from the moment it is sent. (A delivery the server sent before it
		// saw the request but that is read afterwards is misfiled as current;
		// its ack then still gets the server's 406.)
		if m.Requeue {
			ch.newEpochLocked()
			ch.settle.reset()
			ch.txSettled = nil
		}
	}
}

// OnError registers fn to be told of each channel error the channel
// recovered from (the server's channel.close, after which it was reopened).
// The failing call also returns the error; fn is for errors caused by
// asynchronous methods such as a publish to a missing exchange. Calls run in
// order on the connection's callback goroutine.
func (ch *Channel) OnError(fn func(*Error)) {
	ch.mu.Lock()
	ch.listeners.onError = append(ch.listeners.onError, fn)
	ch.mu.Unlock()
}

type channelListeners struct {
	onError  []func(*Error)
	onReturn []func(Return)
	onAck    []func(deliveryTag uint64, multiple bool)
	onNack   []func(deliveryTag uint64, multiple bool)
	onFlow   []func(active bool)
}
