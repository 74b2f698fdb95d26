package amqp

import (
	"context"
	"errors"
)

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
	// Not call: Close goes out at once, also while a recovery reopens
	// the channel, and state and frame change under one lock.
	p := &pendingCall{reply: make(chan callResult, 1)}
	err := ch.sendNowLocked(&ChannelClose{ReplyCode: CodeSuccess, ReplyText: "client closed the channel"}, p)
	ch.mu.Unlock()
	if err != nil {
		ch.finish(ErrClosed)
		return nil
	}
	ch.await()
	defer ch.awaited()
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

// finish ends the channel for good with err: pending calls, consumers and
// confirmations get it, and the channel number is freed.
func (ch *Channel) finish(err error) { ch.end(err, freeNumber) }

// finishAndReserve is finish for a channel a frame may still arrive for:
// its number is retired rather than freed.
func (ch *Channel) finishAndReserve(err error) { ch.end(err, retireNumber) }

// end is finish and finishAndReserve, with what becomes of the number.
func (ch *Channel) end(err error, number channelNumber) {
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
		c.end(err, dropAckableBuffered)
	}
	if ch.traces != nil {
		ch.traceEpochEnded(nil)
	}
	if ch.id != 0 {
		ch.releaseNumber(number)
	}
}

// channelNumber says what becomes of an ended channel's number.
type channelNumber uint8

const (
	// freeNumber lets the next Channel call reuse the number.
	freeNumber channelNumber = iota
	// retireNumber keeps it unused while the link lasts, because a frame
	// for the ended channel (a close-ok that crossed) may still arrive.
	retireNumber
)

// releaseNumber takes ch out of its connection's channel table and frees or
// retires its number.
func (ch *Channel) releaseNumber(number channelNumber) {
	c := ch.conn
	c.chMu.Lock()
	defer c.chMu.Unlock()
	if c.channels.get(ch.id) == ch {
		c.channels.set(ch.id, nil)
	}
	if l := ch.link.Load(); number == retireNumber && l != nil && !l.ended() {
		if l.reserved == nil {
			l.reserved = map[uint16]bool{}
		}
		l.reserved[ch.id] = true
	}
}
