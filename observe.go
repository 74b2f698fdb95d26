package amqp

import (
	"context"
	"log/slog"
)

// Connection events as the application observes them: logged to
// Config.Logger and reported to Config.Tracer's event hooks. Everything the
// reader notices is queued for the connection's callback goroutine, so a
// slow log handler or tracer never stalls the reader; ordering with the
// OnBlocked, OnError and OnRecovery listeners is kept. No log record
// carries a password or a message body.
//
// Here are the connection's life and channel errors. A record that belongs
// to one step sits in that step's file, so the step does not call back into
// this one: recovery events in recovery.go (observeRecovery),
// connection.blocked in flow.go (observeBlocked),
// dropped buffered deliveries in consumer.go (logDropped), malformed
// messages in delivery.go (logMalformed, the only per-message record: rare,
// at Warn).

// logOpened logs a connection that completed its handshake (Info).
func (c *Connection) logOpened(ctx context.Context, l *link) {
	if c.log == nil {
		return
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "amqp: connection opened",
		slog.String("addr", l.addr), slog.String("vhost", c.cfg.Vhost),
		slog.String("connection_name", c.cfg.ConnectionName),
		slog.Duration("heartbeat", l.heartbeat), slog.Uint64("frame_max", uint64(l.frameMax)),
		slog.Uint64("channel_max", uint64(l.channelMax)))
}

// logDialFailed logs a dial that failed (Debug: DialConfig returns the error).
func (c *Connection) logDialFailed(ctx context.Context, err error) {
	if c.log == nil {
		return
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "amqp: dial failed", slog.Any("addrs", c.cfg.Addrs), slog.Any("error", err))
}

// logClosed logs the end of the connection: Info when the application
// closed it, Error when it was lost for good. It is queued last on the
// callback goroutine, which finalize is about to stop.
func (c *Connection) logClosed(cause error) {
	if c.log == nil {
		return
	}
	log := c.log
	addr := c.cur.Load().addr
	c.events.push(func() {
		if cause == nil || cause == ErrClosed {
			log.LogAttrs(context.Background(), slog.LevelInfo, "amqp: connection closed", slog.String("addr", addr))
			return
		}
		log.LogAttrs(context.Background(), slog.LevelError, "amqp: connection lost", slog.String("addr", addr), slog.Any("error", cause))
	})
}

// observeChannelError reports the server's channel.close (Warn).
func (ch *Channel) observeChannelError(err *Error) {
	c := ch.conn
	if t := c.tr.chanErr; t != nil {
		c.events.push(func() { t.TraceChannelError(ch, err) })
	}
	if log := c.log; log != nil {
		c.events.push(func() {
			log.LogAttrs(context.Background(), slog.LevelWarn, "amqp: channel closed by the server",
				slog.Int("channel", int(ch.id)), slog.Int("code", int(err.Code)), slog.String("reason", err.Reason),
				slog.Any("error", err))
		})
	}
}
