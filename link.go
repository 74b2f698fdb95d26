package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// link is one incarnation of a connection: a socket, the handshake's
// outcome, and the reader and writer goroutines and the heartbeat timer that serve it.
// A [Connection] has one link at a time; with recovery on, a lost link is
// replaced by a new one while the Connection, its Channels and Consumers stay
// the same objects.
type link struct {
	c    *Connection
	conn net.Conn
	addr string
	fr   *FrameReader // reader-owned after the handshake
	w    *writer

	// Negotiated in connection.tune; fixed afterwards.
	frameMax         uint32
	channelMax       uint16
	heartbeat        time.Duration
	serverProperties Table

	ch0 *Channel // channel 0: connection-level calls (close, update-secret)

	reserved map[uint16]bool // channel ids not to reuse on this link (a close-ok may still be in flight); guarded by c.chMu

	lastRead atomic.Int64 // unix nanos of the last read from the socket
	paused   atomic.Bool  // the reader waits for a consumer to drain (heartbeat silence is ours, not the peer's)
	wake     wakeList     // reader-owned: consumers to wake before the next read (see wakeList)
	lead     leadRole     // who reads the socket: the reader goroutine, or a consumer it is lent to
	hb       heartbeat    // the liveness timer, when heartbeats are on

	// knownCause is why the link is about to end, recorded before a final
	// frame (close-ok, or our connection.close) is queued: writing it may
	// fail first, and the write error must not hide the real reason.
	knownCause atomic.Pointer[error]
	closeOnce  sync.Once
	done       chan struct{} // closed when the link starts to end
	err        error         // why it ended; written once before done is closed
	reconnect  bool          // recovery replaces the link (Connection.shouldRecover); written once before done is closed
	// usable is when the link became usable (unix nanos): its handshake,
	// or for a link that replaces a lost one, the end of the restore onto
	// it; 0 while that restore runs.
	usable atomic.Int64
	// detached is closed once the connection has handled the end: every
	// channel was ended or set to recover, so none still treats this link as
	// its own. A sender that found the link dead waits for it, then retries.
	// With recovery that happens only after the reader has exited, so no
	// frame of the old link can reach a channel that is already recovering.
	detached     chan struct{}
	detachedOnce sync.Once
	readerDone   chan struct{} // closed when the reader goroutine has returned
}

func (l *link) markDetached() { l.detachedOnce.Do(func() { close(l.detached) }) }

// dialLink connects to addr and completes the handshake, bounded by ctx and
// timeout (ConnectionTimeout, or RecoveryConfig.AttemptTimeout when
// recovering; negative: by ctx alone). The link's goroutines are not started.
func (c *Connection) dialLink(ctx context.Context, addr string, timeout time.Duration) (*link, error) {
	cfg := c.cfg
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Until the handshake is done every read and write must end when ctx
	// does: a silent peer cannot hold the dial past its deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	l, err := c.handshakeLink(ctx, conn, addr)
	if !stop() || err != nil {
		conn.Close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	l.w = newWriter(l.conn, func(err error) { l.shutdown(fmt.Errorf("%w: write: %w", ErrConnectionLost, err)) })
	return l, nil
}

func (c *Connection) handshakeLink(ctx context.Context, conn net.Conn, addr string) (*link, error) {
	if tc := c.cfg.tlsConfigFor(addr); tc != nil {
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tlsConn
	}
	l := &link{
		c:          c,
		conn:       conn,
		addr:       addr,
		done:       make(chan struct{}),
		detached:   make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	l.ch0 = newChannel(c, 0)
	l.ch0.link.Store(l)
	l.lastRead.Store(time.Now().UnixNano())
	l.fr = NewFrameReader(readTracker{conn, l})
	if err := l.handshake(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// start launches the link's goroutines once the handshake is done. They are
// counted in the connection's wait group, which Close waits for.
func (l *link) start() {
	c := l.c
	l.initLead()
	c.wg.Add(2)
	go func() { defer c.wg.Done(); l.w.run() }()
	go func() { defer c.wg.Done(); defer close(l.readerDone); l.readLoop() }()
	if l.heartbeat > 0 {
		l.startHeartbeat()
	}
}

// shutdown ends the link with cause: the connection either ends with it or,
// with recovery on, sets its channels to recover and starts reconnecting
// (see Connection.linkEnded). What is queued for the socket (such as a
// close-ok) is flushed, then the socket closes and the link's goroutines
// stop. Only the first cause counts.
func (l *link) shutdown(cause error) {
	if known := l.knownCause.Load(); known != nil {
		cause = *known
	}
	l.closeOnce.Do(func() {
		c := l.c
		c.wg.Add(1) // the closer goroutine below; added before anyone can see done and Wait
		l.err = cause
		l.reconnect = c.shouldRecover(l, cause)
		close(l.done)
		c.linkEnded(l, cause) // closes l.detached, at once or once the reader has exited
		// The writer flushes and exits on its own goroutine; the reader ends
		// when the socket closes. Neither may be waited for here, since
		// shutdown can run on either of them.
		go func() {
			defer c.wg.Done()
			l.stopHeartbeat()
			l.w.shutdown()
			l.conn.Close()
			l.stopLead()
		}()
	})
}

// deadErr is the error for a write the link's writer refused: the link is
// ending (a failed writer always ends it), so wait for that, bounded by ctx,
// and report it as linkErr does.
func (l *link) deadErr(ctx context.Context) error {
	select {
	case <-l.done:
	case <-ctx.Done():
	}
	if err := linkErr(ctx, l); err != nil {
		return err
	}
	return closedBy(ErrConnectionLost)
}

// waitDetached waits, bounded by ctx, until the connection has handled the
// link's end (see detached).
func (l *link) waitDetached(ctx context.Context) error {
	select {
	case <-l.detached:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("amqp: waiting for the connection to recover: %w", ctx.Err())
	}
}

// ended reports whether the link has started to end.
func (l *link) ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// waitForRoom blocks the reader until a consumer's buffer has room: the
// documented backpressure for consumers that outrun the application.
func (l *link) waitForRoom(room, consumerDone <-chan struct{}) {
	if l.lead.leading { // a Next reads: it hands this wait to the reader goroutine
		l.lead.room, l.lead.roomDone = room, consumerDone
		return
	}
	l.wake.wakeAll() // a Next not yet woken could never make the room
	l.paused.Store(true)
	select {
	case <-room:
	case <-consumerDone:
	case <-l.c.closeCalled: // Close must be able to read its close-ok
	case <-l.done:
	}
	l.lastRead.Store(nowNano()) // the silence was ours, not the server's
	l.paused.Store(false)
}
