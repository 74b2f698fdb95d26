package amqp

import (
	"context"
	"errors"
	"fmt"
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
	ch.reader.ch = ch
	ch.newEpochLocked()
	if c.tr.delivery != nil {
		ch.traces = &deliveryTraces{t: c.tr.delivery}
	}
	return ch
}

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
