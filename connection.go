package amqp

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Connection is an AMQP connection to one broker node. It is safe for
// concurrent use. Its goroutines (a reader, a writer, a heartbeat timer when
// heartbeats are on, and the callback queue) all end when the connection
// closes, however it closes.
type Connection struct {
	cfg  Config
	conn net.Conn
	addr string
	fr   *FrameReader // reader-owned after the handshake
	w    *writer

	// Negotiated in connection.tune; fixed afterwards.
	frameMax         uint32
	channelMax       uint16
	heartbeat        time.Duration
	serverProperties Table

	ch0 *Channel // channel 0: connection-level calls (close, update-secret) use the channel RPC path

	chMu     sync.Mutex
	channels []atomic.Pointer[Channel] // indexed by channel id; read by the reader without chMu
	nextID   uint16                    // where the next free-id search starts; guarded by chMu
	reserved map[uint16]bool           // ids never to reuse (a close-ok may still be in flight); guarded by chMu

	blocked   gate // shut while the server blocks publishing (connection.blocked)
	blockMu   sync.Mutex
	onBlocked []func(Blocking) // guarded by blockMu

	strings  stringCache // reader-owned: interned consumer tags, exchanges, routing keys
	events   *eventQueue
	lastRead atomic.Int64 // unix nanos of the last read from the socket
	paused   atomic.Bool  // the reader waits for a consumer to drain (heartbeat silence is ours, not the peer's)

	closeCalled chan struct{} // closed by the first Close: the application asked for the end
	closeOnceCC sync.Once
	// knownCause is why the connection is about to end, recorded before a
	// final frame (close-ok, or our connection.close) is queued: writing it
	// may fail first, and the write error must not hide the real reason.
	knownCause atomic.Pointer[error]
	closeOnce  sync.Once
	done       chan struct{}
	err        error          // why the connection ended; written once before done is closed
	wg         sync.WaitGroup // reader, writer, heartbeat and the closer
	eventsWG   sync.WaitGroup // the callback goroutine, waited for separately (see wait)
}

// Blocking tells whether the server blocked publishing on the connection
// (connection.blocked, Active true) or lifted the block (Active false), with
// the server's reason such as "low on memory".
type Blocking struct {
	Active bool
	Reason string
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
	var failures []error
	for _, addr := range cfg.Addrs {
		c, err := dialAddr(ctx, cfg, addr)
		if err == nil {
			return c, nil
		}
		failures = append(failures, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(failures) == 1 {
		return nil, fmt.Errorf("amqp: dial %w", failures[0])
	}
	return nil, &DialError{Failures: failures}
}

// DialError reports that no address of a cluster completed the handshake.
type DialError struct {
	Failures []error // one per address tried, in order, each naming its address
}

func (e *DialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "amqp: dial: all %d addresses failed", len(e.Failures))
	for _, f := range e.Failures {
		b.WriteString("; ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns every address's failure, so errors.Is and errors.As look at all of them.
func (e *DialError) Unwrap() []error { return e.Failures }

func dialAddr(ctx context.Context, cfg Config, addr string) (*Connection, error) {
	if cfg.ConnectionTimeout > 0 { // negative: bounded by ctx alone
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectionTimeout)
		defer cancel()
	}
	conn, err := cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Until the handshake is done every read and write must end when ctx
	// does: a silent peer cannot hold the dial past its deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	c, err := handshakeConn(ctx, cfg, conn, addr)
	if !stop() || err != nil {
		conn.Close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c.start()
	return c, nil
}

func handshakeConn(ctx context.Context, cfg Config, conn net.Conn, addr string) (*Connection, error) {
	if tc := cfg.tlsConfigFor(addr); tc != nil {
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tlsConn
	}
	c := &Connection{
		cfg:         cfg,
		conn:        conn,
		addr:        addr,
		done:        make(chan struct{}),
		closeCalled: make(chan struct{}),
		events:      newEventQueue(),
	}
	c.ch0 = newChannel(c, 0)
	c.lastRead.Store(time.Now().UnixNano())
	c.fr = NewFrameReader(readTracker{conn, &c.lastRead})
	if err := c.handshake(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// readTracker records when the socket last delivered bytes, for the
// heartbeat monitor, at the cost of one atomic store per read system call.
type readTracker struct {
	net.Conn
	last *atomic.Int64
}

func (r readTracker) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// start launches the connection's goroutines once the handshake is done.
func (c *Connection) start() {
	c.w = newWriter(c.conn, func(err error) { c.shutdown(fmt.Errorf("%w: write: %w", ErrConnectionLost, err)) })
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.w.run() }()
	go func() { defer c.wg.Done(); c.readLoop() }()
	c.eventsWG.Add(1)
	go func() { defer c.eventsWG.Done(); c.events.run() }()
	if c.heartbeat > 0 {
		c.wg.Add(1)
		go func() { defer c.wg.Done(); c.heartbeatLoop() }()
	}
}

// readLoop is the reader goroutine: the only code that reads the socket. It
// decodes each frame and hands it to channel 0 or to its channel; no handler
// it calls blocks on user code.
func (c *Connection) readLoop() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.readFailed(err)
			return
		}
		if err := c.dispatch(f); err != nil {
			c.protocolFailure(err)
			return
		}
	}
}

func (c *Connection) dispatch(f Frame) error {
	if f.Type == FrameHeartbeat {
		if f.Channel != 0 {
			return &Error{Code: CodeCommandInvalid, Reason: fmt.Sprintf("heartbeat frame on channel %d", f.Channel), Connection: true}
		}
		return nil // its arrival already counted in lastRead
	}
	if f.Channel == 0 {
		if f.Type != FrameMethod {
			return &Error{Code: CodeCommandInvalid, Reason: fmt.Sprintf("%s frame on channel 0", f.Type), Connection: true}
		}
		m, err := DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		return c.handleConnectionMethod(m)
	}
	ch := c.channel(f.Channel)
	if ch == nil {
		// A frame for a channel we closed may still arrive; anything else on
		// an unknown channel is the server's error, but not worth dying for.
		// The late close-ok of a retired number makes it usable again.
		if f.Type == FrameMethod && len(f.Payload) >= 4 &&
			keyOf(binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])) == keyChannelCloseOk {
			c.chMu.Lock()
			delete(c.reserved, f.Channel)
			c.chMu.Unlock()
		}
		return nil
	}
	return ch.handleFrame(f)
}

func (c *Connection) channel(id uint16) *Channel {
	if int(id) >= len(c.channels) {
		return nil
	}
	return c.channels[id].Load()
}

func (c *Connection) handleConnectionMethod(m Method) error {
	switch m := m.(type) {
	case *ConnectionClose:
		// Answer, then end: the close-ok is flushed by shutdown.
		var cause error = &Error{Code: m.ReplyCode, Reason: m.ReplyText, ClassID: m.FailingClassID, MethodID: m.FailingMethodID,
			Server: true, Connection: true}
		c.knownCause.Store(&cause)
		_ = c.w.appendFrames(func(b []byte) ([]byte, error) {
			return appendMethodFrame(b, 0, &ConnectionCloseOk{})
		})
		c.shutdown(cause)
		return nil
	case *ConnectionBlocked:
		c.setBlocked(true, m.Reason)
		return nil
	case *ConnectionUnblocked:
		c.setBlocked(false, "")
		return nil
	}
	if isReplyKey(m.key()) {
		return c.ch0.complete(m, nil)
	}
	return &Error{Code: CodeCommandInvalid, Reason: "unexpected " + m.MethodName() + " on channel 0", Connection: true}
}

// readFailed ends the connection after the reader's error.
func (c *Connection) readFailed(err error) {
	switch {
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrMalformedFrame):
		c.protocolFailure(err)
		return
	case c.closeRequested() && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)):
		c.shutdown(ErrClosed)
		return
	}
	c.shutdown(fmt.Errorf("%w: read: %w", ErrConnectionLost, err))
}

// protocolFailure ends the connection because the server broke the protocol
// (or sent what our limits refuse): tell the server why with connection.close,
// then shut down without waiting for its close-ok.
func (c *Connection) protocolFailure(err error) {
	var amqpErr *Error
	code := CodeFrameError
	switch {
	case errors.As(err, &amqpErr):
		code = amqpErr.Code
	case errors.Is(err, ErrUnknownMethod), errors.Is(err, ErrMalformedFrame):
		code = CodeSyntaxError
	}
	reason := err.Error()
	if len(reason) > maxShortstr {
		reason = reason[:maxShortstr]
	}
	if amqpErr == nil {
		err = fmt.Errorf("%w (sent connection.close %d %s)", err, uint16(code), code)
	}
	c.knownCause.Store(&err)
	_ = c.w.appendFrames(func(b []byte) ([]byte, error) {
		return appendMethodFrame(b, 0, &ConnectionClose{ReplyCode: code, ReplyText: reason})
	})
	c.shutdown(err)
}

// shutdown ends the connection with cause: it fails every pending call,
// channel, consumer and confirmation, flushes what is queued for the socket
// (such as a close-ok), closes the socket and stops the goroutines. Only the
// first cause counts.
func (c *Connection) shutdown(cause error) {
	if known := c.knownCause.Load(); known != nil {
		cause = *known
	}
	c.closeOnce.Do(func() {
		c.wg.Add(1) // the closer goroutine below; added before anyone can see done and Wait
		c.err = cause
		close(c.done)
		closed := c.closedErr()
		c.ch0.finish(closed)
		c.chMu.Lock()
		var chans []*Channel
		for i := range c.channels {
			if ch := c.channels[i].Load(); ch != nil {
				chans = append(chans, ch)
				c.channels[i].Store(nil)
			}
		}
		c.chMu.Unlock()
		for _, ch := range chans {
			ch.finish(closed)
		}
		c.blocked.open() // waiting publishers see done and return the cause
		// The writer flushes and exits on its own goroutine; the reader ends
		// when the socket closes. Neither may be waited for here, since
		// shutdown can run on either of them.
		go func() {
			defer c.wg.Done()
			if c.w != nil {
				c.w.shutdown()
			}
			c.conn.Close()
			c.events.close()
		}()
	})
}

// closedErr is what operations return once the connection has ended: it
// matches ErrClosed and the cause.
func (c *Connection) closedErr() error {
	if c.err == nil || c.err == ErrClosed {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, c.err)
}

// Close closes the connection gracefully: connection.close, then the
// server's close-ok, bounded by ctx. Channels, consumers and pending
// confirmations end with ErrClosed. When Close returns, every goroutine of
// the connection has exited, except that Close called from a callback
// (OnBlocked, OnReturn, ...) does not wait for the callback goroutine, which
// ends when the callback returns. It is idempotent; after the connection
// ended for another reason it returns nil without sending anything.
func (c *Connection) Close(ctx context.Context) error {
	c.closeOnceCC.Do(func() { close(c.closeCalled) })
	select {
	case <-c.done:
		return c.wait(ctx)
	default:
	}
	_, err := c.ch0.call(ctx, &ConnectionClose{ReplyCode: CodeSuccess, ReplyText: "client closed the connection"})
	c.shutdown(ErrClosed)
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

// wait waits for the connection's goroutines to exit, bounded by ctx. While
// a callback runs, the callback goroutine is not waited for: Close may have
// been called from that very callback, and the goroutine ends when it returns.
func (c *Connection) wait(ctx context.Context) error {
	exited := make(chan struct{})
	// If ctx ends first this helper outlives the call, but not the
	// connection: shutdown has run, so the goroutines it waits for end once
	// the socket closes (within the writer's 2 s deadline) and the last
	// callback returns.
	go func() {
		c.wg.Wait()
		if !c.events.inCallback.Load() {
			c.eventsWG.Wait()
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

// Done returns a channel that is closed when the connection has ended.
func (c *Connection) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open, and afterwards why it ended:
// ErrClosed after Close, an *Error when the server closed it (such as 320
// CONNECTION_FORCED), ErrHeartbeatTimeout, or an error matching ErrConnectionLost.
func (c *Connection) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// IsAlive reports whether the connection is open and, when heartbeats are
// on, has heard from the server within two heartbeat intervals.
func (c *Connection) IsAlive() bool {
	select {
	case <-c.done:
		return false
	default:
	}
	if c.heartbeat <= 0 || c.paused.Load() {
		return true
	}
	return time.Since(time.Unix(0, c.lastRead.Load())) < 2*c.heartbeat
}

// ServerProperties returns the server's properties from connection.start:
// product, version, capabilities and so on. The caller must not modify them.
func (c *Connection) ServerProperties() Table { return c.serverProperties }

// Addr returns the address ("host:port") of the node this connection reached.
func (c *Connection) Addr() string { return c.addr }

// FrameMax returns the negotiated largest frame size in bytes.
func (c *Connection) FrameMax() uint32 { return c.frameMax }

// ChannelMax returns the negotiated highest channel number.
func (c *Connection) ChannelMax() uint16 { return c.channelMax }

// Heartbeat returns the negotiated heartbeat interval; 0 means heartbeats are off.
func (c *Connection) Heartbeat() time.Duration { return c.heartbeat }

// UpdateSecret replaces the secret (such as an OAuth 2 token) the connection
// authenticated with, using connection.update-secret, and waits for the
// server's update-secret-ok, bounded by ctx.
func (c *Connection) UpdateSecret(ctx context.Context, secret, reason string) error {
	_, err := c.ch0.call(ctx, &ConnectionUpdateSecret{NewSecret: secret, Reason: reason})
	return err
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

func (c *Connection) setBlocked(active bool, reason string) {
	var changed bool
	if active {
		changed = c.blocked.close(reason)
	} else {
		changed = c.blocked.open()
	}
	if !changed {
		return // a repeat of the current state
	}
	c.blockMu.Lock()
	listeners := c.onBlocked
	c.blockMu.Unlock()
	ev := Blocking{Active: active, Reason: reason}
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

// ErrBlocked matches a [BlockedError]: a publish that gave up waiting because
// the server had blocked the connection.
var ErrBlocked = errors.New("amqp: connection blocked by the server")

// BlockedError reports that ctx ended while a publish waited for the server
// to unblock the connection. It matches ErrBlocked and ctx's error.
type BlockedError struct {
	Reason string // the server's reason, such as "low on memory"
	Err    error  // ctx's error
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("amqp: connection blocked by the server (%s): %v", e.Reason, e.Err)
}

// Unwrap lets errors.Is match both ErrBlocked and the context's error.
func (e *BlockedError) Unwrap() []error { return []error{ErrBlocked, e.Err} }
