package amqp

import (
	"context"
	"fmt"
	"log/slog"
)

// Blocking tells whether the server blocked publishing on the connection
// (connection.blocked, Active true) or lifted the block (Active false), with
// the server's reason such as "low on memory".
type Blocking struct {
	Active bool
	Reason string
}

// OnBlocked registers fn to be told when the server blocks publishing on this
// connection (connection.blocked, for example on a memory alarm) and when it
// lifts the block. Calls run in order on the connection's callback goroutine,
// never on the reader; a slow fn delays later callbacks but loses none.
func (c *Connection) OnBlocked(fn func(Blocking)) {
	c.blockMu.Lock()
	c.onBlocked = append(c.onBlocked, fn)
	c.blockMu.Unlock()
}

// Blocked reports whether the server currently blocks publishing, and why.
func (c *Connection) Blocked() (bool, string) { return c.blocked.state() }

// block records the server's connection.blocked; unblock its
// connection.unblocked (and a new link's fresh start). Listeners hear of a
// change only, not of a repeat of the current state.
func (c *Connection) block(reason string) {
	if c.blocked.close(reason) {
		c.tellBlocked(Blocking{Active: true, Reason: reason})
	}
}

func (c *Connection) unblock() {
	if c.blocked.open() {
		c.tellBlocked(Blocking{})
	}
}

func (c *Connection) tellBlocked(ev Blocking) {
	c.blockMu.Lock()
	listeners := c.onBlocked
	c.blockMu.Unlock()
	c.observeBlocked(ev)
	for _, fn := range listeners {
		c.events.push(func() { fn(ev) })
	}
}

// waitUnblocked waits while the server blocks publishing, bounded by ctx.
func (c *Connection) waitUnblocked(ctx context.Context) error {
	reason, err := c.blocked.wait(ctx, c.done)
	switch {
	case err == nil:
		return nil
	case err == errGateDone:
		return c.closedErr()
	}
	return &BlockedError{Reason: reason, Err: err}
}

// waitPublishable waits while the connection is blocked or the channel's
// flow is paused, bounded by ctx. (Room in the write queue and a recovery in
// progress are waited for by withSendLock.)
func (ch *Channel) waitPublishable(ctx context.Context) error {
	blocked, _ := ch.conn.blocked.state()
	paused, _ := ch.flow.state()
	if !blocked && !paused {
		return nil // (decided here: a wait below would not be counted by await)
	}
	ch.await() // the unblock (or flow) must be read
	defer ch.awaited()
	if err := ch.conn.waitUnblocked(ctx); err != nil {
		return err
	}
	if _, err := ch.flow.wait(ctx, ch.done); err != nil {
		if err == errGateDone {
			return ch.Err()
		}
		return fmt.Errorf("amqp: publish: channel %d paused by the server (channel.flow): %w", ch.id, err)
	}
	return nil
}

// serverFlow handles the server's channel.flow: pause or resume publishing
// on this channel, and answer flow-ok.
func (ch *Channel) serverFlow(active bool) {
	if active {
		ch.flow.open()
	} else {
		ch.flow.close("channel.flow")
	}
	ch.mu.Lock()
	_ = ch.sendNowLocked(&ChannelFlowOk{Active: active}, nil)
	listeners := ch.listeners.onFlow
	ch.mu.Unlock()
	for _, fn := range listeners {
		ch.conn.events.push(func() { fn(active) })
	}
}

// OnFlow registers fn to be told when the server pauses (false) or resumes
// (true) publishing on this channel with channel.flow. Publish waits while
// paused. Calls run in order on the connection's callback goroutine.
func (ch *Channel) OnFlow(fn func(active bool)) {
	ch.mu.Lock()
	ch.listeners.onFlow = append(ch.listeners.onFlow, fn)
	ch.mu.Unlock()
}

// observeBlocked reports connection.blocked (Warn) and connection.unblocked (Info).
func (c *Connection) observeBlocked(b Blocking) {
	if t := c.tr.blocked; t != nil {
		c.events.push(func() { t.TraceBlocked(c, b) })
	}
	if log := c.log; log != nil {
		c.events.push(func() {
			if b.Active {
				log.LogAttrs(context.Background(), slog.LevelWarn, "amqp: connection blocked by the server", slog.String("reason", b.Reason))
			} else {
				log.LogAttrs(context.Background(), slog.LevelInfo, "amqp: connection unblocked")
			}
		})
	}
}
