package layer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/amqp-go/amqp"
)

// Layer is a channel layer on one RabbitMQ vhost. It is safe for concurrent
// use: every method may be called from many goroutines at once, each call
// running on an AMQP channel of its own taken from a pool, so that a
// channel error in one call (a 404 or 406 from the broker) never disturbs
// another.
//
// A Layer holds one AMQP connection. When it is lost, the next call dials
// again (trying the URL's nodes in order); calls that were running on the
// lost connection return its error.
type Layer struct {
	cfg  *settings
	wire wire // nil in Native mode: the Layer's own methods are the mapping

	// background counts the goroutines a wire starts for a connection
	// (consumers); Close waits for them.
	background sync.WaitGroup

	// dialing is a one-slot semaphore: the goroutine that holds it may
	// replace sess. Waiting for it is bounded by the caller's ctx.
	dialing chan struct{}

	mu     sync.Mutex
	sess   *session // nil before the first dial and after a lost connection is noticed
	closed bool
}

// session is one connection and what the layer keeps for it.
type session struct {
	conn *amqp.Connection

	mu       sync.Mutex
	idle     []*amqp.Channel      // channels ready for the next call
	opening  int                  // channels being opened in the background
	avail    chan struct{}        // closed (and replaced) when a channel is put in idle, or an open failed
	openErr  error                // why the last open failed; nil after one succeeds
	declared map[string]time.Time // channel queue -> until when it surely exists
}

// maxIdleChannels bounds the channels a layer keeps open between calls.
const maxIdleChannels = 32

// maxOpening bounds the channels a layer opens at once.
const maxOpening = 4

// cleanupTimeout bounds the work a call does after its ctx ended, to leave
// the broker as it should be: cancelling consumers and requeueing messages.
const cleanupTimeout = 10 * time.Second

// New connects to the broker that cfg.URL names and returns a layer.
func New(ctx context.Context, cfg Config) (*Layer, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	l := &Layer{cfg: s, dialing: make(chan struct{}, 1)}
	switch s.Mode {
	case AsgiRabbitMQ:
		l.wire = &asgiWire{l: l, locks: map[string]*queueLock{}}
	case ChannelsRabbitMQ:
		l.wire = newChannelsWire(l)
	}
	if _, err := l.session(ctx); err != nil {
		l.Close(ctx)
		return nil, err
	}
	return l, nil
}

// Mode returns the layer's wire mode.
func (l *Layer) Mode() WireMode { return l.cfg.Mode }

// Capacity returns the capacity of a channel: the first ChannelCapacity rule
// that matches its name, or Capacity. In ChannelsRabbitMQ mode it is
// Capacity, the capacity of this layer's queue, which all its channels
// share.
func (l *Layer) Capacity(channel string) int { return l.cfg.capacity(channel) }

// Close closes the layer's connection, bounded by ctx. Calls in progress
// return an error; later calls return ErrClosed. Messages that a Receive was
// waiting for stay in their channels. Close is idempotent.
func (l *Layer) Close(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	s := l.sess
	l.sess = nil
	l.mu.Unlock()
	var err error
	if s != nil {
		err = s.conn.Close(ctx)
	}
	if c, ok := l.wire.(interface{ close() }); ok {
		c.close()
	}
	// The wire's consumers end with their connection.
	l.background.Wait()
	return err
}

// goBackground runs f in a goroutine that Close waits for.
// backgroundConsumerEnded handles the end (err) of a consumer that a mode
// runs on conn for the life of the connection. Unless the application
// closed the layer, conn is closed too: when the server cancelled the
// consumer (its queue was deleted) the connection stays up, and the layer
// would stay deaf; closed, the next call dials again and sets it all up.
func backgroundConsumerEnded(conn *amqp.Connection, err error) {
	if amqp.EndedByApplication(err) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	conn.Close(ctx)
}

func (l *Layer) goBackground(f func()) {
	l.background.Go(f)
}

// session returns the current session, dialing when there is none or its
// connection has ended.
func (l *Layer) session(ctx context.Context) (*session, error) {
	if s, err := l.current(); s != nil || err != nil {
		return s, err
	}
	select {
	case l.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("layer: waiting to connect: %w", ctx.Err())
	}
	defer func() { <-l.dialing }()
	if s, err := l.current(); s != nil || err != nil {
		return s, err // another goroutine connected meanwhile
	}
	conn, err := l.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("layer: connecting: %w", err)
	}
	if l.wire != nil {
		// Before any call uses the connection: what every process of
		// the mode declares on connecting, and its consumer.
		if err := l.wire.setUp(ctx, conn); err != nil {
			cctx, cancel := cleanupContext(ctx)
			defer cancel()
			conn.Close(cctx)
			return nil, fmt.Errorf("layer: setting up the %s connection: %w", l.cfg.Mode, err)
		}
	}
	s := &session{conn: conn, declared: map[string]time.Time{}, avail: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		conn.Close(ctx)
		return nil, ErrClosed
	}
	l.sess = s
	return s, nil
}

// dial connects, trying as many times as the URL's connection_attempts
// says, retry_delay apart.
func (l *Layer) dial(ctx context.Context) (*amqp.Connection, error) {
	for attempt := 1; ; attempt++ {
		conn, err := amqp.DialConfig(ctx, l.cfg.amqp)
		if err == nil || attempt >= l.cfg.dial.attempts {
			return conn, err
		}
		t := time.NewTimer(l.cfg.dial.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (attempt %d of %d: %w)", ctx.Err(), attempt, l.cfg.dial.attempts, err)
		}
	}
}

// current returns the session if its connection is open, or ErrClosed.
func (l *Layer) current() (*session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.sess != nil && l.sess.conn.Err() != nil {
		l.sess = nil // lost: the next call dials again
	}
	return l.sess, nil
}

// channel returns a channel for one call, from the session's pool or newly
// opened: in confirm mode, with a prefetch of one delivery for the whole
// channel. Give it back with put.
//
// Channels are opened in the background, at most maxOpening at a time, and
// go to the pool when ready, whether or not the call that wanted one is
// still waiting: a call whose ctx ends while a channel opens costs nothing
// more, whereas giving up the open itself would still cost the broker an
// open and a close, and a storm of short deadlines would keep every channel
// number busy with abandoned opens.
func (l *Layer) channel(ctx context.Context) (*session, *amqp.Channel, error) {
	s, err := l.session(ctx)
	if err != nil {
		return nil, nil, err
	}
	for {
		if s.conn.Err() != nil {
			// Lost before the call sent anything: connect again.
			if s, err = l.session(ctx); err != nil {
				return nil, nil, err
			}
		}
		s.mu.Lock()
		for len(s.idle) > 0 {
			ch := s.idle[len(s.idle)-1]
			s.idle = s.idle[:len(s.idle)-1]
			if ch.Err() == nil {
				s.mu.Unlock()
				return s, ch, nil
			}
		}
		if s.opening < maxOpening {
			s.opening++
			go s.open()
		}
		avail := s.avail
		s.mu.Unlock()
		select {
		case <-avail:
			s.mu.Lock()
			err, none := s.openErr, len(s.idle) == 0
			s.mu.Unlock()
			if err != nil && none {
				return nil, nil, fmt.Errorf("layer: opening a channel: %w", err)
			}
		case <-s.conn.Done():
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("layer: waiting for a channel: %w", ctx.Err())
		}
	}
}

// withChannel runs f on a channel from the pool, which goes back to the
// pool afterwards.
func (l *Layer) withChannel(ctx context.Context, f func(ch *amqp.Channel) error) error {
	s, ch, err := l.channel(ctx)
	if err != nil {
		return err
	}
	defer s.put(ch, true)
	return f(ch)
}

// open opens a channel, sets it up and puts it in the pool. If that fails,
// the callers waiting for a channel are told why.
func (s *session) open() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	ch, err := s.setUp(ctx)
	s.mu.Lock()
	s.opening--
	s.openErr = err
	if err != nil {
		close(s.avail)
		s.avail = make(chan struct{})
	}
	s.mu.Unlock()
	if err == nil {
		s.put(ch, true)
	}
}

func (s *session) setUp(ctx context.Context) (*amqp.Channel, error) {
	ch, err := s.conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	err = ch.ConfirmSelect(ctx, amqp.ConfirmSelect{})
	if err == nil {
		// Receive consumes from several queues at once and wants one
		// message: a channel-wide prefetch of one keeps the broker from
		// sending more than that before the others are cancelled.
		err = ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 1, Global: true})
	}
	if err != nil {
		s.discard(ch)
		return nil, err
	}
	return ch, nil
}

// put returns a channel to the pool, or closes it when it is not fit for
// another call (it ended, or the call left it in an unknown state) or the
// pool is full.
func (s *session) put(ch *amqp.Channel, fit bool) {
	if fit && ch.Err() == nil {
		s.mu.Lock()
		if len(s.idle) < maxIdleChannels {
			s.idle = append(s.idle, ch)
			close(s.avail)
			s.avail = make(chan struct{})
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
	s.discard(ch)
}

// discard closes a channel: the broker requeues whatever was delivered on
// it and not acknowledged.
func (s *session) discard(ch *amqp.Channel) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	ch.Close(ctx)
}

// channelQueueArgs are the arguments of a channel's queue: expiry, capacity
// enforced by the broker, and removal once unused for twice the expiry (as
// asgi_rabbitmq does; by then every message in it has expired).
func (l *Layer) channelQueueArgs(channel string) amqp.Table {
	return amqp.Table{
		"x-message-ttl": l.cfg.expiryMS,
		"x-expires":     2 * l.cfg.expiryMS,
		"x-max-length":  int64(l.cfg.capacity(channel)),
		"x-overflow":    "reject-publish",
	}
}

// declareChannel declares a channel's queue (idempotent; it renews the
// queue's x-expires lease).
func (l *Layer) declareChannel(ctx context.Context, s *session, ch *amqp.Channel, channel string) error {
	q := l.queueName(channel)
	// Registered first: Flush may find a name whose object is gone, never
	// miss one that exists.
	if err := l.register(ctx, s, ch, "queue "+q); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Arguments: l.channelQueueArgs(channel)}); err != nil {
		return fmt.Errorf("layer: declaring the queue of channel %q: %w", channel, err)
	}
	s.noteDeclared(q, time.Now().Add(l.cfg.Expiry))
	return nil
}

// ensureChannels declares the queues of the channels that were not declared
// recently. A declared queue lives for at least 2×Expiry once unused, so a
// declaration is trusted for Expiry.
func (l *Layer) ensureChannels(ctx context.Context, s *session, ch *amqp.Channel, channels []string) error {
	now := time.Now()
	for _, c := range channels {
		s.mu.Lock()
		until, ok := s.declared[l.queueName(c)]
		s.mu.Unlock()
		if ok && now.Before(until) {
			continue
		}
		if err := l.declareChannel(ctx, s, ch, c); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) noteDeclared(queue string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.declared) >= 4096 {
		now := time.Now()
		for q, t := range s.declared {
			if now.After(t) {
				delete(s.declared, q)
			}
		}
		if len(s.declared) >= 4096 {
			clear(s.declared)
		}
	}
	s.declared[queue] = until
}

func (s *session) forgetDeclared(queue string) {
	s.mu.Lock()
	delete(s.declared, queue)
	s.mu.Unlock()
}

// checkChannels validates channel names and removes duplicates.
func checkChannels(channels []string) ([]string, error) {
	if len(channels) == 0 {
		return nil, errors.New("layer: no channel given")
	}
	out := make([]string, 0, len(channels))
	seen := make(map[string]bool, len(channels))
	for _, c := range channels {
		if err := checkChannel(c); err != nil {
			return nil, err
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

// cleanupContext is for work that must be done even though ctx ended.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}
