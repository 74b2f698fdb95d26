package amqp_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Helpers for the frame-level tests against the scripted fake server
// (amqptest): dialling it, playing the server's part in opening channels and
// consumers, a socket that stalls, and recordingBroker for recovery tests.

// fakeConn dials a fake server and returns the client and the server's end.
func fakeConn(t *testing.T, opts amqptest.Options, cfg amqp.Config) (*amqp.Connection, *amqptest.Conn) {
	t.Helper()
	return fakeConnVia(t, opts, cfg, nil)
}

// fakeConnVia is fakeConn with the client's socket wrapped by wrap, if set.
func fakeConnVia(t *testing.T, opts amqptest.Options, cfg amqp.Config, wrap func(net.Conn) net.Conn) (*amqp.Connection, *amqptest.Conn) {
	t.Helper()
	srv := amqptest.NewServer(t, opts)
	cfg.Dial = srv.Dial
	if wrap != nil {
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := srv.Dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(c), nil
		}
	}
	return dialFake(t, srv, cfg)
}

// dialFake dials srv with cfg and accepts the connection on its side; the
// connection is dropped and closed when the test ends.
func dialFake(t *testing.T, srv *amqptest.Server, cfg amqp.Config) (*amqp.Connection, *amqptest.Conn) {
	t.Helper()
	conn, err := amqp.DialConfig(t.Context(), cfg)
	require.NoError(t, err)
	sc, err := srv.Accept(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() {
		// No one plays the server any more: drop it so Close ends at once.
		sc.Drop()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(ctx)
	})
	return conn, sc
}

// openFakeChannel opens a channel, playing the server's part.
func openFakeChannel(t *testing.T, conn *amqp.Connection, sc *amqptest.Conn) *amqp.Channel {
	t.Helper()
	type result struct {
		ch  *amqp.Channel
		err error
	}
	res := make(chan result, 1)
	go func() {
		ch, err := conn.Channel(t.Context())
		res <- result{ch, err}
	}()
	id, _ := amqptest.Expect[*amqp.ChannelOpen](t, sc)
	require.NoError(t, sc.Send(t.Context(), id, &amqp.ChannelOpenOk{}))
	r := <-res
	require.NoError(t, r.err)
	require.Equal(t, id, r.ch.ID())
	return r.ch
}

// confirmSelectFake puts ch in confirm mode, playing the server's part.
func confirmSelectFake(t *testing.T, ch *amqp.Channel, sc *amqptest.Conn) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- ch.ConfirmSelect(t.Context(), amqp.ConfirmSelect{}) }()
	id, _ := amqptest.Expect[*amqp.ConfirmSelect](t, sc)
	require.NoError(t, sc.Send(t.Context(), id, &amqp.ConfirmSelectOk{}))
	require.NoError(t, <-errc)
}

// fakeConsumer starts a consumer with tag "c" on a fresh channel of a fake
// server, playing the server's part.
func fakeConsumer(t *testing.T, opt amqp.ConsumerOptions) (*amqp.Consumer, *amqptest.Conn, uint16) {
	t.Helper()
	return fakeConsumerWith(t, amqp.Config{}, opt)
}

// fakeConsumerWith is fakeConsumer on a connection dialled with cfg.
func fakeConsumerWith(t *testing.T, cfg amqp.Config, opt amqp.ConsumerOptions) (*amqp.Consumer, *amqptest.Conn, uint16) {
	t.Helper()
	conn, sc := fakeConn(t, amqptest.Options{}, cfg)
	ch := openFakeChannel(t, conn, sc)
	return consumeOnFake(t, ch, sc, opt), sc, ch.ID()
}

// consumeOnFake starts consumer "c" on queue "q", playing the server's part.
func consumeOnFake(t *testing.T, ch *amqp.Channel, sc *amqptest.Conn, opt amqp.ConsumerOptions) *amqp.Consumer {
	t.Helper()
	consumed := make(chan *amqp.Consumer, 1)
	go func() {
		c, err := ch.ConsumeWith(t.Context(), amqp.BasicConsume{Queue: "q", ConsumerTag: "c"}, opt)
		require.NoError(t, err)
		consumed <- c
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: "c"}))
	return <-consumed
}

// stallConn simulates a socket whose peer stopped reading (full kernel
// buffer): while stalled, Write blocks until the write deadline passes or
// the conn is closed.
type stallConn struct {
	net.Conn
	mu       sync.Mutex
	stalled  bool
	deadline time.Time
	closed   chan struct{}
	once     sync.Once
	inWrite  atomic.Int32
}

func (s *stallConn) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.deadline = t
	s.mu.Unlock()
	return s.Conn.SetWriteDeadline(t)
}

func (s *stallConn) SetDeadline(t time.Time) error {
	s.mu.Lock()
	s.deadline = t
	s.mu.Unlock()
	return s.Conn.SetDeadline(t)
}

func (s *stallConn) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.Conn.Close()
}

func (s *stallConn) Write(b []byte) (int, error) {
	for {
		s.mu.Lock()
		st, dl := s.stalled, s.deadline
		s.mu.Unlock()
		if !st {
			return s.Conn.Write(b)
		}
		s.inWrite.Store(1)
		if !dl.IsZero() && time.Now().After(dl) {
			s.inWrite.Store(0)
			return 0, os.ErrDeadlineExceeded
		}
		select {
		case <-s.closed:
			s.inWrite.Store(0)
			return 0, net.ErrClosed
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func stallDial(t *testing.T, opts amqptest.Options) (*amqp.Connection, *amqptest.Conn, *stallConn) {
	srv := amqptest.NewServer(t, opts)
	var sconn *stallConn
	cfg := amqp.Config{Dial: func(ctx context.Context, n, a string) (net.Conn, error) {
		c, err := srv.Dial(ctx, n, a)
		if err != nil {
			return nil, err
		}
		sconn = &stallConn{Conn: c, closed: make(chan struct{})}
		return sconn, nil
	}}
	conn, err := amqp.DialConfig(t.Context(), cfg)
	require.NoError(t, err)
	sc, err := srv.Accept(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { sc.Drop(); sconn.Close() })
	return conn, sc, sconn
}

func consumeFake(t *testing.T, ch *amqp.Channel, sc *amqptest.Conn, tag string, noAck bool, limit int) *amqp.Consumer {
	consumed := make(chan *amqp.Consumer, 1)
	go func() {
		c, err := ch.ConsumeWith(t.Context(), amqp.BasicConsume{Queue: "q", ConsumerTag: tag, NoAck: noAck},
			amqp.ConsumerOptions{BufferLimit: limit})
		require.NoError(t, err)
		consumed <- c
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: tag}))
	return <-consumed
}

// recordingBroker is an amqptest server that answers like AutoReply and
// records, per connection, the methods the client sent. Server-named queues
// get names unique across connections, as on a broker. intercept, when set,
// sees each command first (with its connection's number, in the order of
// their first command) and may answer it itself.
type recordingBroker struct {
	srv       *amqptest.Server
	holdAcks  atomic.Bool // leave publishes unconfirmed
	intercept interceptFunc

	mu       sync.Mutex
	accepted []*amqptest.Conn // in the order Accept returned them
	senders  []*amqptest.Conn // in the order of their first command
	log      map[*amqptest.Conn][]string
	names    int
}

type interceptFunc func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (handled bool, err error)

func newRecordingBroker(t *testing.T, opts amqptest.Options, intercept interceptFunc) *recordingBroker {
	b := &recordingBroker{log: map[*amqptest.Conn][]string{}, intercept: intercept}
	opts.Handler = b.handle
	b.srv = amqptest.NewServer(t, opts)
	return b
}

func (b *recordingBroker) handle(ctx context.Context, c *amqptest.Conn, cmd *amqptest.Command) error {
	b.mu.Lock()
	if _, seen := b.log[c]; !seen {
		b.senders = append(b.senders, c)
	}
	b.log[c] = append(b.log[c], describe(cmd))
	idx := slices.Index(b.senders, c)
	b.mu.Unlock()
	if b.intercept != nil {
		if handled, err := b.intercept(ctx, idx, c, cmd); handled {
			return err
		}
	}
	switch m := cmd.Method.(type) {
	case *amqp.QueueDeclare:
		if m.Queue == "" && !m.Passive {
			b.mu.Lock()
			b.names++
			name := fmt.Sprintf("amq.gen-%d", b.names)
			b.mu.Unlock()
			return c.Send(ctx, cmd.Channel, &amqp.QueueDeclareOk{Queue: name})
		}
	case *amqp.BasicPublish:
		if b.holdAcks.Load() {
			return nil
		}
	}
	return amqptest.AutoReply(ctx, c, cmd)
}

func describe(cmd *amqptest.Command) string {
	switch m := cmd.Method.(type) {
	case *amqp.ExchangeDeclare:
		return fmt.Sprintf("%d exchange.declare %s", cmd.Channel, m.Exchange)
	case *amqp.QueueDeclare:
		return fmt.Sprintf("%d queue.declare %q exclusive=%t", cmd.Channel, m.Queue, m.Exclusive)
	case *amqp.QueueBind:
		return fmt.Sprintf("%d queue.bind %s->%s %s", cmd.Channel, m.Exchange, m.Queue, m.RoutingKey)
	case *amqp.ExchangeBind:
		return fmt.Sprintf("%d exchange.bind %s->%s %s", cmd.Channel, m.Source, m.Destination, m.RoutingKey)
	case *amqp.BasicQos:
		return fmt.Sprintf("%d basic.qos %d global=%t", cmd.Channel, m.PrefetchCount, m.Global)
	case *amqp.BasicConsume:
		return fmt.Sprintf("%d basic.consume %s %s", cmd.Channel, m.Queue, m.ConsumerTag)
	case *amqp.BasicPublish:
		body := string(cmd.Body) // the start of it: some tests pad bodies with dots
		if len(body) > 8 {
			body = body[:8]
		}
		return fmt.Sprintf("%d basic.publish %s %s", cmd.Channel, m.RoutingKey, strings.TrimRight(body, "."))
	}
	return fmt.Sprintf("%d %s", cmd.Channel, cmd.Method.MethodName())
}

// conn returns the i-th connection the server accepted, waiting for it.
func (b *recordingBroker) conn(t *testing.T, i int) *amqptest.Conn {
	t.Helper()
	for {
		b.mu.Lock()
		if len(b.accepted) > i {
			c := b.accepted[i]
			b.mu.Unlock()
			return c
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(t.Context(), waitBudget(t))
		c, err := b.srv.Accept(ctx)
		cancel()
		require.NoError(t, err)
		b.mu.Lock()
		b.accepted = append(b.accepted, c)
		b.mu.Unlock()
	}
}

func (b *recordingBroker) methods(c *amqptest.Conn) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.log[c]...)
}

// methodsOf returns what the idx-th connection to send a command sent.
func (b *recordingBroker) methodsOf(idx int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if idx >= len(b.senders) {
		return nil
	}
	return append([]string(nil), b.log[b.senders[idx]]...)
}

// senderCount returns how many connections have sent a command.
func (b *recordingBroker) senderCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.senders)
}

// eventLog collects recovery events.
type eventLog struct {
	mu     sync.Mutex
	events []amqp.RecoveryEvent
	signal chan struct{}
}

func watchRecovery(conn *amqp.Connection) *eventLog {
	l := &eventLog{signal: make(chan struct{}, 1)}
	conn.OnRecovery(func(ev amqp.RecoveryEvent) {
		l.mu.Lock()
		l.events = append(l.events, ev)
		l.mu.Unlock()
		select {
		case l.signal <- struct{}{}:
		default:
		}
	})
	return l
}

// wait waits for an event of kind and returns it.
func (l *eventLog) wait(t *testing.T, kind amqp.RecoveryEventKind) amqp.RecoveryEvent {
	t.Helper()
	deadline := time.After(waitBudget(t))
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if ev.Kind == kind {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		select {
		case <-l.signal:
		case <-deadline:
			t.Fatalf("no recovery event %q; got %v", kind, l.all())
		}
	}
}

// count returns how many events of kind have arrived.
func (l *eventLog) count(kind amqp.RecoveryEventKind) int {
	n := 0
	for _, ev := range l.all() {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func (l *eventLog) String() string {
	var s []string
	for _, ev := range l.all() {
		s = append(s, ev.String())
	}
	return strings.Join(s, "\n")
}

func (l *eventLog) all() []amqp.RecoveryEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]amqp.RecoveryEvent(nil), l.events...)
}

func recoveringConfig(b *recordingBroker, rc amqp.RecoveryConfig) amqp.Config {
	if rc.MinBackoff == 0 {
		rc.MinBackoff = time.Millisecond
	}
	if rc.MaxBackoff == 0 {
		rc.MaxBackoff = 5 * time.Millisecond
	}
	return amqp.Config{Dial: b.srv.Dial, Recovery: &rc}
}

// dialRecovering connects to b with recovery on (rc, with short backoffs),
// closes the connection when the test ends, and watches its recovery events.
func dialRecovering(t *testing.T, b *recordingBroker, rc amqp.RecoveryConfig) (*amqp.Connection, *eventLog) {
	t.Helper()
	conn, err := amqp.DialConfig(t.Context(), recoveringConfig(b, rc))
	require.NoError(t, err)
	closeConn(t, conn)
	return conn, watchRecovery(conn)
}

func closeConn(t *testing.T, conn *amqp.Connection) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, conn.Close(ctx))
	})
}
