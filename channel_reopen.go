package amqp

import (
	"context"
	"fmt"
	"slices"
	"time"
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
	if ch.state == chClosing || ch.internal || (!ch.opened && ch.state != chRecovering) {
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
	ch.reopenSteps = 0
	ch.flow.open()
	ch.forgetAndUnlock(lost, fmt.Errorf("%w: %w", ErrPublishLost, lost), true)
}

// forgetAndUnlock is what a recovering channel does when the server has
// forgotten it (its link was lost, or the server closed it mid-recovery):
// calls in flight fail with callErr, the channel's tags and confirm
// sequence are reset (see resetForReopenLocked), and unread deliveries that
// need an acknowledgement are dropped. Consumers stay registered, to be
// subscribed again. ch.mu must be held; it is released.
func (ch *Channel) forgetAndUnlock(callErr, confirmErr error, keep bool) {
	calls := ch.calls.drain()
	ch.resetForReopenLocked(confirmErr, keep)
	consumers := ch.consumerListLocked()
	ch.mu.Unlock()
	for _, p := range calls {
		p.resolve(callResult{err: callErr})
	}
	for _, c := range consumers {
		c.dropAckable()
	}
}

// resetForReopenLocked voids what the server forgot with the channel:
// delivery tags (older deliveries become stale), a half-assembled message,
// and confirm sequence numbers. Unconfirmed publishes fail with lostErr, or
// with RecoveryConfig.Republish and keep set wait in ch.republish to be sent
// again in their order. ch.mu must be held.
func (ch *Channel) resetForReopenLocked(lostErr error, keep bool) {
	ch.newEpochLocked()
	ch.settle.reset()
	ch.txSettled, ch.rollbacks = nil, nil
	ch.reader.asm = assembly{}
	ch.reader.rx = rxScratch{} // (it may still point into the old link's read buffer and string cache)
	ch.lastConsumer = nil
	if keep && ch.conn.republishing() && ch.confirms.active {
		// Those in the tracker were sent before those still waiting in
		// ch.republish (a loss in the middle of republishing): keep the order.
		ch.republish = append(ch.confirms.takePending(), ch.republish...)
	}
	ch.confirms.failAll(lostErr) // and leaves confirm mode: the reopen enters it anew
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

// reopenOn sends channel.open and re-applies qos, confirm and tx mode.
func (ch *Channel) reopenOn(ctx context.Context) error {
	if _, err := ch.recoveryCall(ctx, &ChannelOpen{}); err != nil {
		return err
	}
	ch.mu.Lock()
	ch.opened = true
	steps := make([]Method, 0, 4)
	if ch.globalPrefetch != nil {
		steps = append(steps, ch.globalPrefetch)
	}
	if ch.prefetch != nil {
		steps = append(steps, ch.prefetch)
	}
	if ch.confirmMode {
		steps = append(steps, &ConfirmSelect{})
	}
	if ch.txMode {
		steps = append(steps, &TxSelect{})
	}
	ch.mu.Unlock()
	for _, m := range steps {
		if _, err := ch.recoveryCall(ctx, m); err != nil {
			return err
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
		if _, err := ch.recoveryCall(ctx, &args); err != nil {
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

// recoveryCall sends m on a recovering channel (where application calls
// wait) and waits for its reply, bounded by ctx.
func (ch *Channel) recoveryCall(ctx context.Context, m Method) (callResult, error) {
	ch.mu.Lock()
	if ch.state != chRecovering {
		ch.mu.Unlock()
		if err := ch.Err(); err != nil {
			return callResult{}, err
		}
		return callResult{}, fmt.Errorf("%w: channel %d is not recovering", ErrClosed, ch.id)
	}
	l := ch.link.Load()
	var p *pendingCall
	if expectsReply(m) {
		p = &pendingCall{req: m, reply: make(chan callResult, 1)}
	}
	if err := ch.appendLocked(l, m, p); err != nil {
		ch.mu.Unlock()
		return callResult{}, l.deadErr(ctx)
	}
	ch.mu.Unlock()
	if p == nil {
		return callResult{}, nil
	}
	select {
	case r := <-p.reply:
		return r, r.err
	case <-ctx.Done():
		return callResult{}, ch.ctxError(m, ctx.Err())
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
			c.end(err, true)
			return
		}
		args := c.consumeArgs()
		entity := fmt.Sprintf("consumer %q on queue %q", args.ConsumerTag, args.Queue)
		err := ch.queueExists(ctx, args.Queue)
		if err == nil {
			err = ch.subscribeAgain(ctx, c, &args)
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

// queueExists checks with a passive declare, on a channel of its own so
// that a 404 closes that channel and not the consumer's.
func (ch *Channel) queueExists(ctx context.Context, queue string) error {
	tmp, err := ch.conn.channelWhenUp(ctx, true)
	if err != nil {
		return err
	}
	defer tmp.Close(context.WithoutCancel(ctx))
	_, err = tmp.call(ctx, &QueueDeclare{Queue: queue, Passive: true})
	return err
}

// subscribeAgain sends basic.consume for c and registers it on consume-ok.
func (ch *Channel) subscribeAgain(ctx context.Context, c *Consumer, args *BasicConsume) error {
	_, err := ch.callWithHook(ctx, args, func(r callResult) {
		if r.err != nil {
			return
		}
		ch.mu.Lock()
		defer ch.mu.Unlock()
		c.mu.Lock()
		ended := c.err != nil
		c.mu.Unlock()
		ch.consumers[c.tag] = c
		if ended { // cancelled meanwhile: undo
			ch.cancelAbandonedLocked(c)
		}
	})
	return err
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
