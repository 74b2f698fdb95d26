package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Connection is an AMQP connection to a broker. It is safe for concurrent
// use. Its goroutines (a reader, a writer, the callback queue once a callback
// is queued, and a reconnecting goroutine while recovery runs) and its
// heartbeat timer all end when the connection closes, however it closes.
//
// With [Config.Recovery] set, a lost connection is replaced by a new one
// behind the same *Connection: see the package documentation's section on
// recovery.
type Connection struct {
	cfg Config
	cur atomic.Pointer[link] // the current (or, while recovering, the last) socket incarnation

	chMu     sync.Mutex
	channels chanTable // read by the reader without chMu; limited by the first link's channel_max
	nextID   uint16    // where the next free-id search starts; guarded by chMu
	ending   bool      // finalize has begun: no new channels; guarded by chMu

	blocked   gate // shut while the server blocks publishing (connection.blocked)
	blockMu   sync.Mutex
	onBlocked []func(Blocking) // guarded by blockMu

	rec recoveryState // reconnection and the topology to restore

	consumerCount atomic.Int32           // consumers routed to on all channels: a link lends its socket only to a sole one (lead.go)
	readerWaiters atomic.Int32           // callers waiting for what a reader reads: no link lends its socket meanwhile (lead.go)
	secret        atomic.Pointer[string] // the last secret UpdateSecret set: a recovery logs in with it
	events        *eventQueue
	tr            tracers      // the hooks Config.Tracer implements
	log           *slog.Logger // Config.Logger; nil: silent

	closeCalled chan struct{} // closed by the first Close: the application asked for the end
	closeOnceCC sync.Once
	closeOnce   sync.Once
	done        chan struct{}
	err         error          // why the connection ended; written once before done is closed
	wg          sync.WaitGroup // every link's goroutines, the closers and the reconnecting goroutine
}

// Dial connects to the broker the URL names (see [ParseURL]) and completes
// the AMQP handshake, bounded by ctx. With several hosts in the URL they are
// tried in order until one completes the handshake.
func Dial(ctx context.Context, url string) (*Connection, error) {
	cfg, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	return DialConfig(ctx, cfg)
}

// DialConfig connects with cfg, trying cfg.Addrs in order until one completes
// the handshake. Each attempt is bounded by cfg.ConnectionTimeout and all of
// them by ctx. If every address fails, the error lists each address's failure;
// it matches (errors.Is) the last failure's error.
func DialConfig(ctx context.Context, cfg Config) (*Connection, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tr, err := newTracers(cfg.Tracer)
	if err != nil {
		return nil, err
	}
	if tr.connect != nil {
		return traceConnect(ctx, tr.connect, &cfg, func(ctx context.Context) (*Connection, error) { return dial(ctx, cfg, tr) })
	}
	return dial(ctx, cfg, tr)
}

func dial(ctx context.Context, cfg Config, tr tracers) (*Connection, error) {
	c := &Connection{
		cfg:         cfg,
		done:        make(chan struct{}),
		closeCalled: make(chan struct{}),
		events:      newEventQueue(),
		tr:          tr,
		log:         cfg.Logger,
	}
	c.rec.init()
	l, _, err := c.dialAny(ctx, 0, c.cfg.ConnectionTimeout)
	if err != nil {
		c.logDialFailed(ctx, err)
		return nil, err
	}
	c.channels.init(int(l.channelMax))
	l.usable.Store(time.Now().UnixNano())
	c.cur.Store(l)
	l.start()
	c.logOpened(ctx, l)
	return c, nil
}

// dialAny tries cfg.Addrs in order, starting at index first, until one
// completes the handshake, and returns the link and the index of its address.
func (c *Connection) dialAny(ctx context.Context, first int, timeout time.Duration) (*link, int, error) {
	addrs := c.cfg.Addrs
	var failures []error
	for i := range addrs {
		idx := (first + i) % len(addrs)
		l, err := c.dialLink(ctx, addrs[idx], timeout)
		if err == nil {
			return l, idx, nil
		}
		failures = append(failures, fmt.Errorf("%s: %w", addrs[idx], err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(failures) == 1 {
		return nil, 0, fmt.Errorf("amqp: dial %w", failures[0])
	}
	return nil, 0, &DialError{Failures: failures}
}

func (c *Connection) channel(id uint16) *Channel {
	return c.channels.get(id)
}

// linkEnded handles the end of link l: with recovery on and a cause worth
// reconnecting for, it starts recovery; otherwise the connection ends with
// cause. It runs once per link, from l.shutdown (every link is current by
// the time it can end), and sees to it that l.detached is closed.
func (c *Connection) linkEnded(l *link, cause error) {
	l.ch0.finish(closedBy(cause))
	// A new link starts unblocked: waiting publishers look again, and
	// OnBlocked listeners hear that the block is over.
	c.unblock()
	if l.reconnect {
		c.startRecovery(l, cause)
		return
	}
	c.finalize(cause)
	l.markDetached()
}

// finalize ends the connection for good with cause: pending calls,
// channels, consumers and confirmations fail, and the callback queue stops
// once it has run what is queued.
func (c *Connection) finalize(cause error) {
	c.closeOnce.Do(func() {
		c.err = cause
		closed := c.closedErr()
		// Everything is ended before done closes, so that whoever wakes on
		// Done sees channels, consumers and recovery state already final.
		c.chMu.Lock()
		c.ending = true // no new channels
		var chans []*Channel
		slots := c.channels.all()
		for i := range slots {
			if ch := slots[i].Load(); ch != nil {
				chans = append(chans, ch)
				slots[i].Store(nil)
			}
		}
		c.chMu.Unlock()
		for _, ch := range chans {
			ch.finish(closed)
		}
		c.rec.finish()
		c.logClosed(cause)
		close(c.done)
		c.blocked.open() // waiting publishers see done and return the cause
		c.events.close()
	})
}

// closedErr is what operations return once the connection has ended:
// closedBy the connection's own cause.
func (c *Connection) closedErr() error { return closedBy(c.err) }

// Close closes the connection gracefully: connection.close, then the
// server's close-ok, bounded by ctx. Channels, consumers and pending
// confirmations end with ErrClosed. A recovery in progress stops. When Close
// returns, every goroutine of the connection has exited, except the callback
// goroutine if a callback (OnBlocked, OnReturn, ...) is running at that
// point: Close cannot tell whether it was called from that callback, which
// it must not wait for, so it leaves the goroutine to end once the running
// callback and those queued after it return. It is idempotent;
// after the connection ended for another reason it returns nil without
// sending anything.
func (c *Connection) Close(ctx context.Context) error {
	c.closeOnceCC.Do(func() { close(c.closeCalled) })
	l := c.cur.Load()
	if c.isDone() || l.ended() {
		// Ended, or reconnecting: the recovery goroutine sees closeCalled
		// and ends the connection.
		return c.wait(ctx)
	}
	_, err := l.ch0.call(ctx, &ConnectionClose{ReplyCode: CodeSuccess, ReplyText: "client closed the connection"}, callOpts{})
	l.shutdown(ErrClosed)
	if werr := c.wait(ctx); werr != nil {
		return werr
	}
	if err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// closeRequested reports whether Close was called.
func (c *Connection) closeRequested() bool {
	select {
	case <-c.closeCalled:
		return true
	default:
		return false
	}
}

func (c *Connection) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits for the connection to end and its goroutines to exit, bounded
// by ctx. While a callback runs, the callback goroutine is not waited for:
// Close may have been called from that very callback, and the goroutine ends
// when it returns.
func (c *Connection) wait(ctx context.Context) error {
	exited := make(chan struct{})
	// If ctx ends first this helper outlives the call, but not the
	// connection: Close was called, so the connection ends (recovery stops
	// at closeCalled), and the goroutines it waits for end once the socket
	// closes (within the writer's 2 s deadline) and the last callback returns.
	go func() {
		<-c.done
		c.wg.Wait()
		if !c.events.inCallback.Load() {
			c.events.running.Wait() // the callback goroutine, if it was started
		}
		close(exited)
	}()
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("amqp: close: %w", ctx.Err())
	}
}

// Done returns a channel that is closed when the connection has ended for
// good. A connection that is recovering has not ended.
func (c *Connection) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open or recovering, and afterwards
// why it ended: ErrClosed after Close, an *Error when the server closed it
// (such as 320 CONNECTION_FORCED), ErrHeartbeatTimeout, an error matching
// ErrConnectionLost, or with recovery the error that made it give up.
func (c *Connection) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// IsAlive reports whether the connection is open (not ended, not
// recovering) and, when heartbeats are on, has heard from the server within
// two heartbeat intervals.
func (c *Connection) IsAlive() bool {
	l := c.cur.Load()
	if c.isDone() || l.ended() || c.rec.active() {
		return false
	}
	if l.heartbeat <= 0 || l.paused.Load() {
		return true
	}
	return time.Since(time.Unix(0, l.lastRead.Load())) < 2*l.heartbeat
}

// ServerProperties returns the server's properties from connection.start:
// product, version, capabilities and so on. The caller must not modify them.
// After a recovery they are the new node's.
func (c *Connection) ServerProperties() Table { return c.cur.Load().serverProperties }

// Addr returns the address ("host:port") of the node this connection
// reached (after a recovery, the node it reconnected to).
func (c *Connection) Addr() string { return c.cur.Load().addr }

// FrameMax returns the negotiated largest frame size in bytes.
func (c *Connection) FrameMax() uint32 { return c.cur.Load().frameMax }

// ChannelMax returns the negotiated highest channel number.
func (c *Connection) ChannelMax() uint16 { return c.cur.Load().channelMax }

// Heartbeat returns the negotiated heartbeat interval; 0 means heartbeats are off.
func (c *Connection) Heartbeat() time.Duration { return c.cur.Load().heartbeat }

// channelList returns the connection's channels in id order.
func (c *Connection) channelList() []*Channel {
	c.chMu.Lock()
	defer c.chMu.Unlock()
	var out []*Channel
	slots := c.channels.all()
	for i := range slots {
		if ch := slots[i].Load(); ch != nil {
			out = append(out, ch)
		}
	}
	return out
}

// traceConnect brackets a dial with the ConnectTracer's hooks.
func traceConnect(ctx context.Context, t ConnectTracer, cfg *Config, dial func(context.Context) (*Connection, error)) (*Connection, error) {
	ctx = t.TraceConnectStart(ctx, TraceConnectStartData{Addrs: cfg.Addrs, Vhost: cfg.Vhost})
	c, err := dial(ctx)
	end := TraceConnectEndData{Conn: c, Err: err}
	if c != nil {
		end.Addr = c.Addr()
	}
	t.TraceConnectEnd(ctx, end)
	return c, err
}
