package amqptest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
)

// ErrServerClosed is returned by [Server.Accept] and [Server.Dial] once the
// server is closed.
var ErrServerClosed = errors.New("amqptest: server closed")

// Defaults that a zero [Options] field stands for.
const (
	DefaultMechanisms    = "PLAIN AMQPLAIN"
	DefaultLocales       = "en_US"
	DefaultChannelMax    = 2047      // RabbitMQ's default
	DefaultFrameMax      = 128 << 10 // RabbitMQ's default: 131072 bytes
	DefaultExpectTimeout = 10 * time.Second
)

// Options configure a [Server]. The zero value is a server that accepts any
// credentials and any vhost and proposes RabbitMQ's default limits with
// heartbeats off.
type Options struct {
	// ServerProperties are sent in connection.start. Nil means
	// [DefaultServerProperties]: RabbitMQ's product name and capabilities.
	ServerProperties amqp.Table

	// Mechanisms is the space-separated list of SASL mechanisms offered in
	// connection.start. Empty means [DefaultMechanisms].
	Mechanisms string

	// Locales is the space-separated list of locales offered in
	// connection.start. Empty means [DefaultLocales].
	Locales string

	// ChannelMax, FrameMax and Heartbeat (in seconds) are what
	// connection.tune proposes. Zero ChannelMax and FrameMax mean
	// [DefaultChannelMax] and [DefaultFrameMax]; zero Heartbeat means no
	// heartbeats. To propose zero ("no limit") for the first two, run the
	// handshake by hand (ManualHandshake). Like RabbitMQ, the server closes
	// the connection with 530 NOT_ALLOWED when the client's tune-ok asks for
	// more channels or larger frames than proposed, or for frames smaller
	// than [amqp.MinFrameSize].
	ChannelMax uint16
	FrameMax   uint32
	Heartbeat  uint16

	// CheckAuth, if set, decides whether the client's connection.start-ok
	// logs in; see [Credentials] to read the response of PLAIN and AMQPLAIN.
	// When it returns an error the server refuses the login the way
	// RabbitMQ does: with connection.close 403 ACCESS_REFUSED carrying the
	// error's text if the client announced the authentication_failure_close
	// capability, by closing the socket otherwise. Nil accepts everyone.
	CheckAuth func(mechanism, response string) error

	// CheckVhost, if set, decides whether connection.open may open the
	// vhost. When it returns an error the server answers connection.close
	// 530 NOT_ALLOWED carrying the error's text. Nil accepts every vhost.
	CheckVhost func(vhost string) error

	// ManualHandshake makes Accept return each connection as soon as it is
	// made, before anything is read from it, so that the test can run the
	// handshake itself: [Conn.Handshake], or step by step with
	// [Conn.ReadProtocolHeader], [Conn.Send] and [Expect], or not at all.
	// By default the server runs the handshake of every connection in the
	// background, so that a client's Dial completes without the test's help.
	ManualHandshake bool

	// Handler, if set, serves every connection whose handshake succeeded
	// with [Conn.Serve] in the background, from the moment the handshake
	// ends: [AutoReply] makes the server a cooperative broker that needs no
	// script. The connection is still handed to Accept, so a test can look
	// at its handshake and write to it (Send, SendContent, Deliver), but it
	// must not read from it. An error that ends Serve (other than the
	// connection closing) is reported with the testing.TB's Errorf, returned
	// by Close, and told to the client with connection.close 541
	// INTERNAL_ERROR before the socket closes. Ignored with ManualHandshake.
	Handler Handler

	// TLSConfig, if set, makes every connection, dialed through the
	// listener or [Server.Dial], a TLS connection with this configuration
	// (the client must use TLS too). It needs at least a certificate.
	TLSConfig *tls.Config

	// ExpectTimeout bounds how long [Expect] and [ExpectPublish] wait for
	// the client. Zero means most of the time left before the test's
	// deadline (go test -timeout), so that a busy machine only makes a test
	// slower, or [DefaultExpectTimeout] when the test has no deadline or
	// less is left. In a testing/synctest bubble it is virtual time: the
	// helpers fail as soon as everything in the bubble is blocked.
	ExpectTimeout time.Duration

	// Logf, if set, receives a line for every frame the server reads or
	// writes and for connections coming and going: pass t.Logf to see the
	// conversation when a test fails.
	Logf func(format string, args ...any)
}

// DefaultServerProperties returns a new copy of the server properties a
// zero Options sends: RabbitMQ's product name and the capabilities of
// RabbitMQ 3.x and 4.x. Change the copy to pretend to be another broker,
// for example without the "basic.nack" capability.
func DefaultServerProperties() amqp.Table {
	return amqp.Table{
		"product":     "RabbitMQ",
		"version":     "4.0.0",
		"platform":    "Erlang/OTP (amqptest)",
		"information": "amqptest: a scripted fake server, github.com/amqp-go/amqp/amqptest",
		"capabilities": amqp.Table{
			"publisher_confirms":           true,
			"exchange_exchange_bindings":   true,
			"basic.nack":                   true,
			"consumer_cancel_notify":       true,
			"connection.blocked":           true,
			"consumer_priorities":          true,
			"authentication_failure_close": true,
			"per_consumer_qos":             true,
			"direct_reply_to":              true,
		},
		"cluster_name": "amqptest",
	}
}

func (o *Options) mechanisms() string {
	if o.Mechanisms == "" {
		return DefaultMechanisms
	}
	return o.Mechanisms
}

func (o *Options) locales() string {
	if o.Locales == "" {
		return DefaultLocales
	}
	return o.Locales
}

func (o *Options) channelMax() uint16 {
	if o.ChannelMax == 0 {
		return DefaultChannelMax
	}
	return o.ChannelMax
}

func (o *Options) frameMax() uint32 {
	if o.FrameMax == 0 {
		return DefaultFrameMax
	}
	return o.FrameMax
}

// timeout bounds one Expect: ExpectTimeout, or else most of the time left
// before tb's deadline (go test -timeout), so that a loaded machine makes a
// test slower rather than failing it; never less than DefaultExpectTimeout.
func (o *Options) timeout(tb testing.TB) time.Duration {
	if o.ExpectTimeout > 0 {
		return o.ExpectTimeout
	}
	if deadline, ok := testDeadline(tb); ok {
		// Leave a tenth (at least a second) for the test to report.
		left := time.Until(deadline)
		return max(left-max(left/10, time.Second), DefaultExpectTimeout)
	}
	return DefaultExpectTimeout
}

// testDeadline returns tb's deadline, if it is a *testing.T (or has a
// Deadline method) with one. Inside a testing/synctest bubble, where time is
// virtual and t.Deadline panics, it reports none.
func testDeadline(tb testing.TB) (deadline time.Time, ok bool) {
	d, has := tb.(interface{ Deadline() (time.Time, bool) })
	if !has {
		return time.Time{}, false
	}
	defer func() {
		if recover() != nil {
			deadline, ok = time.Time{}, false
		}
	}()
	return d.Deadline()
}

// Server is a fake AMQP 0-9-1 server: a scriptable peer, not a broker. It
// accepts connections on a loopback TCP listener (see [Server.Addr] and
// [Server.URL]) and from [Server.Dial], which connects through net.Pipe.
// Its methods are safe for concurrent use.
//
// Every goroutine the server starts ends when Close returns.
type Server struct {
	opts   Options
	tb     testing.TB
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	ln     net.Listener // started on the first Addr or URL
	closed bool
	conns  map[*Conn]struct{} // every live connection, for Close
	queue  []*Conn            // ready for Accept, oldest first
	nextID int
	errs   []error // from background handlers, returned by Close
	wg     sync.WaitGroup

	ready chan struct{} // signaled (capacity 1) when queue gets a connection

	closeOnce sync.Once
	closeErr  error
}

// NewServer returns a server configured by opts. It starts no goroutine and
// opens no socket until a client connects through [Server.Dial] or the test
// asks for [Server.Addr] or [Server.URL], so it can be created inside a
// testing/synctest bubble.
//
// If tb is not nil, Close is registered with tb.Cleanup, failures to listen
// end the test with tb.Fatalf, and errors of background handlers (see
// Options.Handler) are reported with tb.Errorf. With a nil tb (in an Example
// function or a program), the caller must call Close, failures to listen
// panic, and Close returns the handlers' errors.
func NewServer(tb testing.TB, opts Options) *Server {
	if opts.ServerProperties == nil {
		opts.ServerProperties = DefaultServerProperties()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:   opts,
		tb:     tb,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*Conn]struct{}),
		ready:  make(chan struct{}, 1),
	}
	if tb != nil {
		tb.Cleanup(func() { _ = s.Close() })
	}
	return s
}

// Addr returns the "127.0.0.1:port" address of the server's TCP listener,
// starting the listener on first use. TCP connections work with any client
// but not inside a testing/synctest bubble: use [Server.Dial] there.
func (s *Server) Addr() string {
	if s.tb != nil {
		s.tb.Helper()
	}
	return s.listen().Addr().String()
}

// URL returns an AMQP URL for the server's TCP listener, such as
// "amqp://guest:guest@127.0.0.1:40123/" ("amqps://" with TLSConfig),
// starting the listener on first use.
func (s *Server) URL() string {
	if s.tb != nil {
		s.tb.Helper()
	}
	scheme := "amqp"
	if s.opts.TLSConfig != nil {
		scheme = "amqps"
	}
	return fmt.Sprintf("%s://guest:guest@%s/", scheme, s.Addr())
}

func (s *Server) listen() net.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln
	}
	var err error
	if s.closed {
		err = ErrServerClosed
	} else {
		s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		err = fmt.Errorf("amqptest: listen: %w", err)
		if s.tb != nil {
			s.tb.Fatal(err)
		}
		panic(err)
	}
	s.logf("listening on %s", s.ln.Addr())
	s.wg.Add(1)
	go s.acceptLoop(s.ln)
	return s.ln
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		_, _ = s.startConn(nc)
	}
}

// Dial connects a client to the server through net.Pipe, ignoring network
// and addr: its signature is that of amqp.Config.Dial, so a test can write
// amqp.Config{Dial: srv.Dial}. Unlike TCP, net.Pipe works inside a
// testing/synctest bubble; it is synchronous and unbuffered, so a side that
// stops reading soon stops the other side's writes.
func (s *Server) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, server := net.Pipe()
	if _, err := s.startConn(server); err != nil {
		client.Close()
		return nil, err
	}
	return client, nil
}

// startConn registers a new connection and starts its goroutines: the reader
// and, unless the handshake is manual, the handshake (then Handler).
func (s *Server) startConn(raw net.Conn) (*Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		raw.Close()
		return nil, ErrServerClosed
	}
	s.nextID++
	c := newConn(s, s.nextID, raw)
	s.conns[c] = struct{}{}
	s.logf("conn %d: accepted from %s", c.id, raw.RemoteAddr())

	p := newPump(c.nc, c.done)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		p.run()
	}()
	go func() {
		defer s.wg.Done()
		c.readLoop(p)
	}()
	if s.opts.ManualHandshake {
		s.enqueueLocked(c)
		return c, nil
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := c.Handshake(s.ctx)
		c.setHandshakeErr(err)
		s.mu.Lock()
		s.enqueueLocked(c)
		s.mu.Unlock()
		if err != nil || s.opts.Handler == nil {
			return
		}
		if err := c.Serve(s.ctx, s.opts.Handler); err != nil && s.ctx.Err() == nil {
			err = fmt.Errorf("amqptest: conn %d: Options.Handler: %w", c.id, err)
			s.report(err)
			// Tell the client, as a broker with an internal error would.
			_ = c.Send(s.ctx, 0, &amqp.ConnectionClose{ReplyCode: amqp.CodeInternalError,
				ReplyText: truncate("INTERNAL_ERROR - "+err.Error(), 255)})
			c.Drop()
		}
	}()
	return c, nil
}

func (s *Server) enqueueLocked(c *Conn) {
	s.queue = append(s.queue, c)
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

func (s *Server) report(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
	if s.tb != nil {
		s.tb.Errorf("%v", err)
	}
}

func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Accept returns the next client connection, waiting for one until ctx
// ends. Connections come in the order their handshakes end.
//
// By default the server has already run the handshake (see
// Options.ManualHandshake). If it failed, because the client hung up or sent
// something unexpected or because CheckAuth or CheckVhost refused it, Accept
// returns the connection together with an error that says why: the
// connection's StartOk, TuneOk and Open tell how far the client got.
func (s *Server) Accept(ctx context.Context) (*Conn, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			c := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			if len(s.queue) > 0 { // wake another waiting Accept
				select {
				case s.ready <- struct{}{}:
				default:
				}
			}
			s.mu.Unlock()
			return c, c.HandshakeErr()
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil, ErrServerClosed
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
		}
	}
}

// Close stops the listener, closes every connection abruptly and waits for
// all of the server's goroutines to end, including handlers started for
// Options.Handler, which must return once their context is done. Close must
// not be called from a handler. It returns the errors of background
// handlers, if any, and is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.cancel()
		if s.ln != nil {
			s.ln.Close()
		}
		conns := make([]*Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			c.Drop()
		}
		s.wg.Wait()
		s.mu.Lock()
		s.closeErr = errors.Join(s.errs...)
		s.queue = nil
		s.mu.Unlock()
	})
	return s.closeErr
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("amqptest: "+format, args...)
	}
}

// truncate cuts s to at most n bytes, to fit a short string.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
