package amqp

import (
	"context"
	"fmt"
	"slices"
)

// detach sets the channel to wait for a new link after its link was lost:
// calls in flight fail with lost (they may or may not have taken effect),
// unconfirmed publishes fail with ErrPublishLost or are kept for
// republishing, deliveries not yet read that need an acknowledgement are
// dropped (the server requeued them), and a new epoch starts so that
// older deliveries are stale. Consumers stay registered, to be subscribed
// again. A channel that was opening, closing, or is the library's own ends.
func (ch *Channel) detach(lost error) {
	ch.mu.Lock()
	if ch.state == chClosed {
		ch.mu.Unlock()
		return
	}
	if ch.state == chClosing || ch.owner == libraryChannel || (!ch.opened && ch.state != chRecovering) {
		ch.mu.Unlock()
		ch.finish(lost)
		return
	}
	ch.state = chRecovering
	ch.link.Store(nil)
	ch.opened = false
	if ch.recovered == nil {
		ch.recovered = make(chan struct{})
	}
	ch.txLost = ch.txLost || ch.txWork
	ch.txWork = false
	ch.reopenPending = 0
	ch.flow.open()
	f := ch.forgetLocked(fmt.Errorf("%w: %w", ErrPublishLost, lost), keepUnconfirmed)
	ch.mu.Unlock()
	f.tell(lost)
}

// forgotten is what a recovering channel lost when the server forgot it:
// the calls in flight and the consumers whose unread deliveries are void.
type forgotten struct {
	calls     []*pendingCall
	consumers []*Consumer
}

// forgetLocked is what a recovering channel does when the server has
// forgotten it (its link was lost, or the server closed it mid-recovery):
// the channel's tags and confirm sequence are reset (see
// resetForReopenLocked), and the calls in flight and the consumers are
// taken out to be told once ch.mu is released (forgotten.tell). Consumers
// stay registered, to be subscribed again. ch.mu must be held.
func (ch *Channel) forgetLocked(confirmErr error, unconfirmed unconfirmedOnReset) forgotten {
	calls := ch.calls.drain()
	ch.resetForReopenLocked(confirmErr, unconfirmed)
	return forgotten{calls: calls, consumers: ch.consumerListLocked()}
}

// tell fails the forgotten calls with callErr and drops the consumers'
// unread deliveries that need an acknowledgement. No lock may be held.
func (f forgotten) tell(callErr error) {
	for _, p := range f.calls {
		p.resolve(callResult{err: callErr})
	}
	for _, c := range f.consumers {
		c.dropAckable()
	}
}

// unconfirmedOnReset says what becomes of unconfirmed publishes when a
// channel's confirm sequence is reset.
type unconfirmedOnReset uint8

const (
	// failUnconfirmed resolves them with the error.
	failUnconfirmed unconfirmedOnReset = iota
	// keepUnconfirmed keeps them in ch.republish, to be sent again in their
	// order, when RecoveryConfig.Republish is set (else they fail).
	keepUnconfirmed
)

// resetForReopenLocked voids what the server forgot with the channel:
// delivery tags (older deliveries become stale), a half-assembled message,
// and confirm sequence numbers. Unconfirmed publishes fail with confirmErr, or
// are kept as unconfirmed says. ch.mu must be held.
func (ch *Channel) resetForReopenLocked(confirmErr error, unconfirmed unconfirmedOnReset) {
	ch.newEpochLocked()
	ch.settle.reset()
	ch.txSettled, ch.rollbacks = nil, fifo[[]uint64]{}
	ch.reader.asm = assembly{}
	ch.reader.rx = rxScratch{} // (it may still point into the old link's read buffer and string cache)
	ch.lastConsumer = nil
	if unconfirmed == keepUnconfirmed && ch.conn.republishing() && ch.confirms.active {
		// Those in the tracker were sent before those still waiting in
		// ch.republish (a loss in the middle of republishing): keep the order.
		ch.republish = append(ch.confirms.takePending(), ch.republish...)
	}
	ch.confirms.failAll(confirmErr) // and leaves confirm mode: the reopen enters it anew
	ch.signalConfirmProgressLocked()
}

func (ch *Channel) consumerListLocked() []*Consumer {
	out := make([]*Consumer, 0, len(ch.consumers))
	for _, c := range ch.consumers {
		out = append(out, c)
	}
	return out
}

// reattach opens the channel again on the new link l and restores it: qos,
// confirm and tx mode, every consumer, and the publishes kept for
// republishing. A consumer whose basic.consume fails ends with the error
// (reported to OnRecovery listeners); the channel is then opened again for
// the others. It returns an error only when l or ctx ends.
func (ch *Channel) reattach(ctx context.Context, l *link) error {
	ch.mu.Lock()
	if ch.state != chRecovering {
		ch.mu.Unlock()
		return nil
	}
	if ch.id > l.channelMax {
		ch.mu.Unlock()
		err := fmt.Errorf("%w: channel %d is above the new connection's channel_max %d", ErrClosed, ch.id, l.channelMax)
		ch.conn.emit(RecoveryEvent{Kind: RecoveryEntityFailed, Entity: fmt.Sprintf("channel %d", ch.id), Err: err})
		ch.finish(err)
		return nil
	}
	ch.link.Store(l)
	ch.mu.Unlock()

	for {
		if err := ch.reopenOn(ctx); err != nil {
			if lerr := linkErr(ctx, l); lerr != nil {
				return lerr
			}
			if !ch.isRecovering() {
				return nil // closed by the application meanwhile
			}
			// The server refused a mode it accepted before; the channel
			// cannot be what the application set up.
			ch.conn.emit(RecoveryEvent{Kind: RecoveryEntityFailed, Entity: fmt.Sprintf("channel %d", ch.id), Err: err})
			ch.finish(fmt.Errorf("%w: %w", ErrClosed, err))
			return nil
		}
		closed, err := ch.resubscribeAll(ctx, l)
		if err != nil {
			return err
		}
		if !ch.isRecovering() {
			return nil // closed by the application meanwhile
		}
		if closed {
			continue // a consumer's failure closed the channel: open it again for the rest
		}
		if err := ch.republishKept(ctx, l); err == errChannelReset {
			if !ch.isRecovering() {
				return nil // closed by the application meanwhile
			}
			continue // closed by the server: open it again and resend
		} else if err != nil {
			return err
		}
		ch.mu.Lock()
		if ch.state == chRecovering && ch.opened {
			ch.state = chOpen
			if ch.recovered != nil {
				close(ch.recovered)
				ch.recovered = nil
			}
			ch.mu.Unlock()
			return nil
		}
		ch.mu.Unlock()
		if lerr := linkErr(ctx, l); lerr != nil {
			return lerr
		}
		// Closed by the server between the steps: start over.
	}
}

func (ch *Channel) isRecovering() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.state == chRecovering
}

// reopenAfter says why a channel is reopened, which decides whether its
// transaction mode comes back (see reopenRecipeLocked).
type reopenAfter uint8

const (
	// afterChannelError: the server closed the channel; the error ended
	// its transaction, so tx.select is not sent again.
	afterChannelError reopenAfter = iota
	// afterConnectionLoss: the connection was recovered; transaction mode
	// is re-applied (the open transaction's work is lost: see txLost).
	afterConnectionLoss
)

// reopenRecipeLocked lists, in order, the requests that reopen the channel
// as the application set it up: channel.open, the recorded basic.qos
// (global, then per consumer), confirm.select, and, after a connection
// loss, tx.select. It is the one recipe both reopens use: serverClosed
// pipelines it from the reader, reopenOn awaits each step. ch.mu must be
// held.
func (ch *Channel) reopenRecipeLocked(after reopenAfter) []Method {
	steps := make([]Method, 0, 5)
	steps = append(steps, &ChannelOpen{})
	if ch.globalPrefetch != nil {
		steps = append(steps, ch.globalPrefetch)
	}
	if ch.prefetch != nil {
		steps = append(steps, ch.prefetch)
	}
	if ch.confirmMode {
		steps = append(steps, &ConfirmSelect{})
	}
	if ch.txMode && after == afterConnectionLoss {
		steps = append(steps, &TxSelect{})
	}
	return steps
}

// reopenOn reopens the channel on its new link after a connection loss,
// awaiting each step of reopenRecipeLocked.
func (ch *Channel) reopenOn(ctx context.Context) error {
	ch.mu.Lock()
	steps := ch.reopenRecipeLocked(afterConnectionLoss)
	ch.mu.Unlock()
	for _, m := range steps {
		if _, err := ch.call(ctx, m, callOpts{restoring: true}); err != nil {
			return err
		}
		if _, ok := m.(*ChannelOpen); ok {
			ch.mu.Lock()
			ch.opened = true
			ch.mu.Unlock()
		}
	}
	return nil
}

// resubscribeAll subscribes every registered consumer again, with its tag
// and arguments (and its queue's new name, if the queue was renamed). It
// reports closed when a failure closed the channel.
func (ch *Channel) resubscribeAll(ctx context.Context, l *link) (closed bool, err error) {
	ch.mu.Lock()
	consumers := ch.consumerListLocked()
	ch.mu.Unlock()
	slices.SortFunc(consumers, func(a, b *Consumer) int { return int(a.seq - b.seq) })
	for _, c := range consumers {
		c.mu.Lock()
		gone := c.err != nil || c.abandoned || c.cancelling
		c.mu.Unlock()
		if gone {
			// Ended, or being cancelled or abandoned when the connection
			// was lost: the application does not want it any more.
			ch.removeConsumer(c, ErrConsumerCancelled)
			continue
		}
		args := c.consumeArgs()
		if _, err := ch.call(ctx, &args, callOpts{restoring: true}); err != nil {
			if lerr := linkErr(ctx, l); lerr != nil {
				return false, lerr
			}
			if !ch.isRecovering() {
				return false, nil // closed by the application meanwhile
			}
			ch.removeConsumer(c, err)
			ch.conn.emit(RecoveryEvent{Kind: RecoveryEntityFailed, Err: err,
				Entity: fmt.Sprintf("consumer %q on queue %q", args.ConsumerTag, args.Queue)})
			ch.mu.Lock()
			closed := !ch.opened
			ch.mu.Unlock()
			if closed {
				return true, nil
			}
		}
	}
	return false, nil
}

// republishKept sends again, in order, the publishes that were unconfirmed
// when the link was lost (RecoveryConfig.Republish); each Confirmation gets
// its new sequence number.
func (ch *Channel) republishKept(ctx context.Context, l *link) error {
	for {
		if err := l.w.waitRoom(ctx); err != nil {
			return err
		}
		ch.mu.Lock()
		if len(ch.republish) == 0 {
			ch.mu.Unlock()
			return nil
		}
		if ch.state != chRecovering || !ch.opened || !ch.confirms.active {
			// The server closed the channel meanwhile (and the resent ones
			// went back to ch.republish), or the application did: stop, and
			// let reattach start over or give up. Nothing is resolved here
			// without the server's word.
			ch.mu.Unlock()
			return errChannelReset
		}
		conf := ch.republish[0]
		msg := conf.msg
		method := BasicPublish{Exchange: msg.Exchange, RoutingKey: msg.RoutingKey, Mandatory: msg.Mandatory, Immediate: msg.Immediate}
		err := l.w.appendFrames(func(b []byte) ([]byte, error) {
			return appendPublishFrames(b, ch.id, &method, &msg.Properties, msg.Body, l.frameMax)
		})
		if err != nil {
			ch.mu.Unlock()
			return l.deadErr(ctx)
		}
		ch.republish = ch.republish[1:]
		ch.confirms.readd(conf)
		ch.mu.Unlock()
	}
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
	_ = ch.sendNowLocked(&ChannelCloseOk{}, nil) // not sent: the link is ending or gone, and the server with it
	ch.observeChannelError(cause)                // queued for the callback goroutine: takes no lock of ch's
	if ch.state == chRecovering {
		// A step of the connection recovery failed: the recovery sees the
		// error in its call and opens the channel again, from scratch.
		ch.opened = false
		// Publishes resent before the close fail with it, as on any channel
		// error (one of them may be its cause: resending them again could
		// fail the same way forever); those not yet resent stay kept.
		f := ch.forgetLocked(cause, failUnconfirmed)
		ch.mu.Unlock()
		f.tell(cause)
		return
	}
	// A close during Close, in answer to a reopen step, or before the channel
	// ever opened is final: reopening again could fail the same way forever.
	if ch.state == chClosing || ch.reopenPending > 0 || !ch.opened {
		// If our close crossed the server's, the server may still answer it
		// with a close-ok: retire the number so that cannot hit a new channel.
		number := freeNumber
		if ch.state == chClosing {
			number = retireNumber
		}
		ch.mu.Unlock()
		ch.end(fmt.Errorf("%w: %w", ErrClosed, cause), number)
		return
	}
	// Everything sent before the server's close was discarded by it.
	calls := ch.calls.drain()
	consumers := ch.takeConsumersLocked()
	ch.resetForReopenLocked(cause, failUnconfirmed)
	ch.state = chReopening // (reopenPending is 0: a close during a reopen ended the channel above)
	// Pipelined: the server handles these in order, and any call made from
	// now on is queued behind them, so it runs on the reopened channel.
	for _, m := range ch.reopenRecipeLocked(afterChannelError) {
		ch.reopenPending++
		_ = ch.sendNowLocked(m, &pendingCall{hook: ch.reopenStep}) // not sent: the link is ending, and its end fails the channel
	}
	if ch.confirmMode {
		ch.enterConfirmModeLocked() // sequence numbers start again at 1
	}
	ch.txMode, ch.txWork, ch.txLost = false, false, false // a channel error ends the transaction
	listeners := ch.listeners.onError
	ch.mu.Unlock()

	for _, p := range calls {
		p.resolve(callResult{err: cause})
	}
	for _, c := range consumers {
		c.end(cause, dropAckableBuffered)
	}
	for _, fn := range listeners {
		ch.conn.events.push(func() { fn(cause) })
	}
}

// reopenStep runs as each reply of the reopen sequence arrives; the channel
// is usable again once the last one is in.
func (ch *Channel) reopenStep(r callResult) {
	if r.err != nil {
		return // the channel or connection ended; finish already ran
	}
	ch.mu.Lock()
	ch.reopenPending--
	if ch.state == chReopening && ch.reopenPending == 0 {
		ch.state = chOpen
	}
	ch.mu.Unlock()
}
