package brokertest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/brokertest"
	"github.com/stretchr/testify/require"
)

// The recovery tests run a confirmed publish + consume stream of persistent
// messages on a durable queue through faults (forced closes, a broker
// restart, a blackholed or reset network, a killed cluster node) and check,
// by message id, that every message whose publish the server confirmed is
// consumed at least once. They also check topology recovery, consumer
// resubscription and the errors that end a recovery.

// recoveryConfig is the recovery every test uses: quick backoff, so that the
// tests spend their time on faults rather than waiting to reconnect.
func recoveryConfig() *amqp.RecoveryConfig {
	return &amqp.RecoveryConfig{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
}

// eventLog records the recovery events of one connection.
type eventLog struct {
	mu      sync.Mutex
	events  []amqp.RecoveryEvent
	changed chan struct{} // closed and replaced on each event
}

func watchRecovery(conn *amqp.Connection) *eventLog {
	l := &eventLog{changed: make(chan struct{})}
	conn.OnRecovery(func(ev amqp.RecoveryEvent) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.events = append(l.events, ev)
		close(l.changed)
		l.changed = make(chan struct{})
	})
	return l
}

func (l *eventLog) all() []amqp.RecoveryEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func (l *eventLog) count(kind amqp.RecoveryEventKind) int {
	n := 0
	for _, ev := range l.all() {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// kinds counts the events by kind, for logs.
func (l *eventLog) kinds() string {
	counts := map[amqp.RecoveryEventKind]int{}
	for _, ev := range l.all() {
		counts[ev.Kind]++
	}
	var parts []string
	for k := amqp.RecoveryStarted; k <= amqp.RecoveryConsumerResubscribed; k++ {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
		}
	}
	return strings.Join(parts, " ")
}

// waitFor waits until an event satisfies match, failing t after d, and
// returns that event.
func (l *eventLog) waitFor(t testing.TB, d time.Duration, what string, match func(amqp.RecoveryEvent) bool) amqp.RecoveryEvent {
	t.Helper()
	timeout := time.After(d)
	for {
		l.mu.Lock()
		changed := l.changed
		for _, ev := range l.events {
			if match(ev) {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%s: not within %v; events so far:\n%s", what, d, l.dump())
		}
	}
}

// waitCount waits until at least n events of kind have been seen.
func (l *eventLog) waitCount(t testing.TB, kind amqp.RecoveryEventKind, n int, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if l.count(kind) >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%d recovery events %q: not within %v; events so far:\n%s", n, kind, d, l.dump())
		}
	}
}

func (l *eventLog) dump() string {
	var b strings.Builder
	for _, ev := range l.all() {
		fmt.Fprintf(&b, "  %v\n", ev)
	}
	return b.String()
}

// closeNamed closes the connection named name on node, retrying while the
// server does not list exactly one such connection (just after a
// recovery the new connection may not be listed yet).
func closeNamed(t testing.TB, node *brokertest.Node, name, reason string) {
	t.Helper()
	var err error
	for range 50 {
		if err = node.CloseConnection(name, reason); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("closing connection %q: %v", name, err)
}

// streamOptions configure a message stream.
type streamOptions struct {
	Addrs      []string
	Shared     bool // publisher and consumer on one connection (else one each)
	Republish  bool // RecoveryConfig.Republish; otherwise the publisher republishes lost messages itself
	Heartbeat  time.Duration
	QueueArgs  amqp.Table    // e.g. x-queue-type: quorum
	ConnTimout time.Duration // Config.ConnectionTimeout
}

// stream is a publisher goroutine and a consumer goroutine exchanging
// numbered persistent messages over a durable queue on recovering
// connections, and what they saw.
type stream struct {
	t       *testing.T
	opts    streamOptions
	queue   string
	pubName string
	subName string

	pubConn, subConn     *amqp.Connection
	pubEvents, subEvents *eventLog

	stopPub     chan struct{}
	pubDone     chan struct{}
	subDone     chan struct{}
	cancelSub   context.CancelFunc
	progressSig chan struct{} // closed and replaced on each confirm or consume

	mu          sync.Mutex
	nextID      int
	published   int          // Publish calls that returned no error, republishes included
	confirmed   map[int]bool // ids the server acked
	consumed    map[int]int  // id -> deliveries received
	deliveries  int          // every delivery received
	redelivered int          // deliveries flagged redelivered
	publishLost int          // confirmations resolved with ErrPublishLost
	nacked      int          // confirmations resolved with a nack
	reopens     int          // publishing channels replaced after a nack
	confOther   int          // confirmations resolved with another error
	publishErrs int          // Publish calls that failed (the message was retried)
	staleAcks   int          // Ack returned ErrStaleDelivery
	ackErrs     int          // Ack returned another error
	unknownIDs  int          // deliveries whose id was never published
	firstErrs   []string     // the first few unexpected errors, for the log
}

// startStream declares the durable queue through the stream's connections
// (so that topology recovery declares it again), and starts the publisher
// and the consumer.
func startStream(t *testing.T, opts streamOptions) *stream {
	t.Helper()
	s := &stream{
		t:           t,
		opts:        opts,
		queue:       uniqueName(t),
		pubName:     uniqueName(t) + "-pub",
		subName:     uniqueName(t) + "-sub",
		stopPub:     make(chan struct{}),
		pubDone:     make(chan struct{}),
		subDone:     make(chan struct{}),
		progressSig: make(chan struct{}),
		confirmed:   map[int]bool{},
		consumed:    map[int]int{},
	}
	rc := recoveryConfig()
	rc.Republish = opts.Republish
	cfg := amqp.Config{Addrs: opts.Addrs, Heartbeat: opts.Heartbeat, Recovery: rc, ConnectionTimeout: opts.ConnTimout}
	pubCfg := cfg
	pubCfg.ConnectionName = s.pubName
	s.pubConn = dial(t, pubCfg)
	s.pubEvents = watchRecovery(s.pubConn)
	if opts.Shared {
		s.subConn, s.subEvents, s.subName = s.pubConn, s.pubEvents, s.pubName
	} else {
		subCfg := cfg
		subCfg.ConnectionName = s.subName
		s.subConn = dial(t, subCfg)
		s.subEvents = watchRecovery(s.subConn)
	}

	ctx := ctxFor(t, 30*time.Second)
	declare := amqp.QueueDeclare{Queue: s.queue, Durable: true, Arguments: opts.QueueArgs}
	pubCh := openChannel(t, s.pubConn)
	require.NoError(t, pubCh.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	_, err := pubCh.QueueDeclare(ctx, declare)
	require.NoError(t, err)
	subCh := openChannel(t, s.subConn)
	require.NoError(t, subCh.Qos(ctx, amqp.BasicQos{PrefetchCount: 200}))
	_, err = subCh.QueueDeclare(ctx, declare)
	require.NoError(t, err)
	cons, err := subCh.Consume(ctx, amqp.BasicConsume{Queue: s.queue, ConsumerTag: "stream-consumer"})
	require.NoError(t, err)

	// The goroutines run until the test stops them, or at worst until the
	// test ends: this cleanup, registered after the connections' (so run
	// before them), stops both and waits for them, then deletes the queue.
	runCtx, cancelRun := context.WithCancel(context.Background())
	subCtx, cancelSub := context.WithCancel(runCtx)
	s.cancelSub = cancelSub
	t.Cleanup(func() {
		cancelRun()
		<-s.pubDone
		<-s.subDone
		if s.pubConn.Err() == nil {
			ctx := ctxFor(t, 30*time.Second)
			ch, err := s.pubConn.Channel(ctx)
			if err == nil {
				_, err = ch.QueueDelete(ctx, amqp.QueueDelete{Queue: s.queue})
				ch.Close(ctx)
			}
			if err != nil {
				t.Logf("deleting queue %s: %v", s.queue, err)
			}
		}
	})
	go s.publish(runCtx, pubCh)
	go s.consume(subCtx, cons)
	return s
}

func (s *stream) noteErr(format string, args ...any) {
	if len(s.firstErrs) < 10 {
		s.firstErrs = append(s.firstErrs, fmt.Sprintf(format, args...))
	}
}

func (s *stream) progressLocked() {
	close(s.progressSig)
	s.progressSig = make(chan struct{})
}

// publish publishes numbered messages, keeping up to 32 unconfirmed, until
// stopPub is closed and every message it published is confirmed. A message
// whose confirmation failed (ErrPublishLost, a nack) is published again.
// After a nack the publisher lets its window drain and moves to a new
// channel: RabbitMQ 3.10 nacks every later publish on a channel that
// published to a quorum queue while the queue had no leader (see
// TestRecoveryClusterNodeKilled), while a new channel works.
func (s *stream) publish(ctx context.Context, ch *amqp.Channel) {
	defer close(s.pubDone)
	type inflight struct {
		id   int
		conf *amqp.Confirmation
	}
	var window []inflight
	var retry []int
	stopping, reopen := false, false
	for {
		if !stopping {
			select {
			case <-s.stopPub:
				stopping = true
			default:
			}
		}
		if stopping && len(retry) == 0 && len(window) == 0 {
			return
		}
		if len(window) > 0 && (len(window) >= 32 || reopen || stopping && len(retry) == 0) {
			w := window[0]
			window = window[1:]
			err := w.conf.Wait(ctx)
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			switch {
			case err == nil:
				s.confirmed[w.id] = true
				s.progressLocked()
			case errors.Is(err, amqp.ErrPublishLost):
				s.publishLost++
				retry = append(retry, w.id)
			case errors.Is(err, amqp.ErrNacked):
				s.nacked++
				retry = append(retry, w.id)
				reopen = true
			default:
				s.confOther++
				s.noteErr("confirmation of %d: %v", w.id, err)
				retry = append(retry, w.id)
			}
			s.mu.Unlock()
			continue
		}
		if reopen {
			time.Sleep(100 * time.Millisecond) // no hot loop while the queue has no leader
			next, err := s.pubConn.Channel(ctx)
			if err == nil {
				if err = next.ConfirmSelect(ctx, amqp.ConfirmSelect{}); err != nil {
					next.Close(ctx)
				}
			}
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			if err != nil {
				s.noteErr("reopening the publishing channel: %v", err)
			} else {
				ch.Close(ctx)
				ch, reopen = next, false
				s.reopens++
			}
			s.mu.Unlock()
			continue
		}
		var id int
		s.mu.Lock()
		if len(retry) > 0 {
			id, retry = retry[0], retry[1:]
		} else {
			id = s.nextID
			s.nextID++
		}
		s.mu.Unlock()
		conf, err := ch.Publish(ctx, amqp.Publishing{
			RoutingKey: s.queue,
			Properties: amqp.Properties{DeliveryMode: 2, MessageID: strconv.Itoa(id)},
			Body:       []byte("message " + strconv.Itoa(id)),
		})
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		if err != nil {
			s.publishErrs++
			s.noteErr("publish %d: %v", id, err)
			retry = append(retry, id)
		} else {
			s.published++
			window = append(window, inflight{id, conf})
		}
		s.mu.Unlock()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
		} else {
			time.Sleep(500 * time.Microsecond) // pace the stream: a few thousand messages per fault
		}
	}
}

// consume records each delivery and acknowledges them in batches of ten
// (an Ack with Multiple for the tenth) until ctx ends. A batch that spans a
// reconnect is acknowledged with a delivery of the new channel, and one
// received wholly before it is stale: the server requeued it and delivers it
// again.
func (s *stream) consume(ctx context.Context, cons *amqp.Consumer) {
	defer close(s.subDone)
	const batch = 10
	unacked := 0
	for {
		d, err := cons.Next(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.t.Errorf("Consumer.Next: %v (the consumer should survive every recovery)", err)
			return
		}
		id, convErr := strconv.Atoi(d.MessageID)
		s.mu.Lock()
		s.deliveries++
		if d.Redelivered {
			s.redelivered++
		}
		if convErr != nil || id < 0 || id >= s.nextID {
			s.unknownIDs++
			s.noteErr("delivery with message id %q", d.MessageID)
		} else {
			s.consumed[id]++
			s.progressLocked()
		}
		s.mu.Unlock()
		if unacked++; unacked < batch {
			continue
		}
		unacked = 0
		if err := d.Ack(ctx, amqp.AckOptions{Multiple: true}); err != nil && ctx.Err() == nil {
			s.mu.Lock()
			if errors.Is(err, amqp.ErrStaleDelivery) {
				s.staleAcks++
			} else {
				s.ackErrs++
				s.noteErr("ack of %d: %v", id, err)
			}
			s.mu.Unlock()
		}
	}
}

func (s *stream) counts() (confirmed, consumed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.confirmed), len(s.consumed)
}

// waitProgress waits until at least n more messages have been confirmed and
// n more consumed, so that the next fault hits a running stream.
func (s *stream) waitProgress(n int, d time.Duration) {
	s.t.Helper()
	c0, u0 := s.counts()
	timeout := time.After(d)
	for {
		s.mu.Lock()
		sig := s.progressSig
		c, u := len(s.confirmed), len(s.consumed)
		s.mu.Unlock()
		if c >= c0+n && u >= u0+n {
			return
		}
		select {
		case <-sig:
		case <-timeout:
			s.t.Fatalf("stream stalled: confirmed %d -> %d, consumed %d -> %d in %v; %s\npublisher events:\n%s\nconsumer events:\n%s",
				c0, c, u0, u, d, s.summary(), s.pubEvents.dump(), s.subEvents.dump())
		}
	}
}

// recovered waits until conn's events show n recoveries.
func (s *stream) recovered(events *eventLog, n int) {
	s.t.Helper()
	events.waitCount(s.t, amqp.RecoverySucceeded, n, 90*time.Second)
}

func (s *stream) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.summaryLocked()
}

func (s *stream) summaryLocked() string {
	dups := s.deliveries - len(s.consumed) - s.unknownIDs
	return fmt.Sprintf("ids %d, published %d, confirmed %d, consumed %d unique (%d deliveries, %d duplicates, %d redelivered), "+
		"publish-lost %d, nacked %d (channel reopened %d times), other confirmation errors %d, publish errors %d, stale acks %d, other ack errors %d",
		s.nextID, s.published, len(s.confirmed), len(s.consumed), s.deliveries, dups, s.redelivered,
		s.publishLost, s.nacked, s.reopens, s.confOther, s.publishErrs, s.staleAcks, s.ackErrs)
}

// finish stops the publisher once every message it published is confirmed,
// waits until every confirmed message has been consumed, stops the consumer,
// and checks and logs the figures.
func (s *stream) finish() {
	t := s.t
	t.Helper()
	close(s.stopPub)
	select {
	case <-s.pubDone:
	case <-time.After(2 * time.Minute):
		t.Fatalf("publisher not done 2 min after it was stopped: %s", s.summary())
	}
	// Every confirmed message must arrive; messages a lost consumer
	// connection held unacknowledged come back once the server notices.
	drainStart := time.Now()
	for {
		s.mu.Lock()
		missing := 0
		for id := range s.confirmed {
			if s.consumed[id] == 0 {
				missing++
			}
		}
		sig := s.progressSig
		s.mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Since(drainStart) > 90*time.Second {
			break // reported as lost below
		}
		select {
		case <-sig:
		case <-time.After(time.Second):
		}
	}
	drained := time.Since(drainStart)
	s.cancelSub()
	<-s.subDone

	s.mu.Lock()
	defer s.mu.Unlock()
	var lost []int
	for id := range s.confirmed {
		if s.consumed[id] == 0 {
			lost = append(lost, id)
		}
	}
	slices.Sort(lost)
	unconfirmed := s.nextID - len(s.confirmed)
	t.Logf("stream: %s, lost %d (drained in %v)", s.summaryLocked(), len(lost), drained.Round(time.Millisecond))
	t.Logf("publisher connection events: %s (now on %s)", s.pubEvents.kinds(), s.pubConn.Addr())
	if !s.opts.Shared {
		t.Logf("consumer connection events: %s (now on %s)", s.subEvents.kinds(), s.subConn.Addr())
	}
	for _, e := range s.firstErrs {
		t.Logf("  unexpected: %s", e)
	}
	require.Empty(t, lost, "confirmed messages never consumed (first ids)")
	require.Zero(t, unconfirmed, "every message is eventually confirmed: the publisher republishes until it is")
	require.Zero(t, s.unknownIDs, "deliveries of messages never published")
	require.Zero(t, s.ackErrs, "Ack errors other than ErrStaleDelivery")
	if s.opts.Republish {
		require.Zero(t, s.publishLost, "with Republish, no confirmation resolves with ErrPublishLost")
	}
	require.True(t, s.pubConn.IsAlive())
	require.True(t, s.subConn.IsAlive())
}

// TestRecoveryForcedCloseStream forces 20 server-side closes
// (rabbitmqctl close_connection: 320 CONNECTION_FORCED) on a running stream.
func TestRecoveryForcedCloseStream(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	const closes = 20

	// The publisher handles ErrPublishLost itself; closes alternate
	// between the publisher's and the consumer's connections, and every
	// fifth close hits both.
	t.Run("SeparateConnections", func(t *testing.T) {
		start := time.Now()
		s := startStream(t, streamOptions{Addrs: []string{node.Addr()}})
		pubCloses, subCloses := 0, 0
		for i := range closes {
			s.waitProgress(100, time.Minute)
			both := i%5 == 4
			if i%2 == 0 || both {
				closeNamed(t, node, s.pubName, "recovery test")
				pubCloses++
			}
			if i%2 == 1 || both {
				closeNamed(t, node, s.subName, "recovery test")
				subCloses++
			}
			s.recovered(s.pubEvents, pubCloses)
			s.recovered(s.subEvents, subCloses)
		}
		s.waitProgress(100, time.Minute)
		s.finish()
		t.Logf("%d closes of the publisher's connection, %d of the consumer's, in %v", pubCloses, subCloses, time.Since(start).Round(time.Millisecond))
		require.Equal(t, pubCloses, s.pubEvents.count(amqp.RecoveryStarted))
		require.Equal(t, pubCloses, s.pubEvents.count(amqp.RecoverySucceeded))
		require.Equal(t, subCloses, s.subEvents.count(amqp.RecoveryStarted))
		require.Equal(t, subCloses, s.subEvents.count(amqp.RecoverySucceeded))
	})

	// One connection for both, with RecoveryConfig.Republish: the library
	// republishes what was unconfirmed.
	t.Run("SharedConnectionRepublish", func(t *testing.T) {
		start := time.Now()
		s := startStream(t, streamOptions{Addrs: []string{node.Addr()}, Shared: true, Republish: true})
		for i := range closes {
			s.waitProgress(100, time.Minute)
			closeNamed(t, node, s.pubName, "recovery test")
			s.recovered(s.pubEvents, i+1)
		}
		s.waitProgress(100, time.Minute)
		s.finish()
		t.Logf("%d closes in %v", closes, time.Since(start).Round(time.Millisecond))
		require.Equal(t, closes, s.pubEvents.count(amqp.RecoveryStarted))
		require.Equal(t, closes, s.pubEvents.count(amqp.RecoverySucceeded))
		for _, ev := range s.pubEvents.all() {
			if ev.Kind == amqp.RecoveryStarted {
				require.ErrorIs(t, ev.Err, amqp.ErrConnectionForced)
			}
		}
	})
}

// TestRecoveryBrokerRestart runs the stream through two restarts of the
// broker application (rabbitmqctl stop_app, then start_app) on a node of
// its own: the durable queue and its persistent messages survive, and the
// clients reconnect once the node listens again. While the node is down the
// first time it also checks, on connections of their own, what calls do
// during a recovery (FailFast, a context bound), that MaxAttempts ends a
// recovery, and that Close stops one.
func TestRecoveryBrokerRestart(t *testing.T) {
	checkLeaks(t)
	node := brokertest.StartNode(t, brokertest.NodeOptions{Name: "brokertest-restart"})
	addrs := []string{node.Addr()}
	s := startStream(t, streamOptions{Addrs: addrs})

	ffRC := recoveryConfig()
	ffRC.FailFast = true
	ffConn := dial(t, amqp.Config{Addrs: addrs, Recovery: ffRC})
	ffEvents := watchRecovery(ffConn)
	ffCh := openChannel(t, ffConn)
	limConn := dial(t, amqp.Config{Addrs: addrs,
		Recovery: &amqp.RecoveryConfig{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, MaxAttempts: 2}})
	limEvents := watchRecovery(limConn)
	closeConn := dial(t, amqp.Config{Addrs: addrs, Recovery: recoveryConfig()})
	closeEvents := watchRecovery(closeConn)
	closeCh := openChannel(t, closeConn)
	appClosedCh := openChannel(t, s.pubConn) // closed by the application during the recovery

	duringFirstOutage := func() {
		ctx := ctxFor(t, 30*time.Second)
		// FailFast: calls fail at once with ErrRecovering.
		ffEvents.waitCount(t, amqp.RecoveryStarted, 1, 30*time.Second)
		require.True(t, ffConn.Recovering())
		require.False(t, ffConn.IsAlive())
		require.NoError(t, ffConn.Err(), "a recovering connection has not ended")
		_, err := ffConn.Channel(ctx)
		require.ErrorIs(t, err, amqp.ErrRecovering)
		_, err = ffCh.Publish(ctx, amqp.Publishing{RoutingKey: "nowhere"})
		require.ErrorIs(t, err, amqp.ErrRecovering)
		_, err = ffCh.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
		require.ErrorIs(t, err, amqp.ErrRecovering)
		require.True(t, amqp.Recoverable(err))

		// Without FailFast a call waits, bounded by its context.
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = s.pubConn.Channel(short)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)

		// MaxAttempts: 2 refused attempts, then the connection ends.
		within(t, limConn.Done(), 30*time.Second, "the connection with MaxAttempts 2 ending")
		t.Logf("MaxAttempts 2: %v; events: %s", limConn.Err(), limEvents.kinds())
		require.ErrorIs(t, limConn.Err(), syscall.ECONNREFUSED)
		require.Equal(t, 2, limEvents.count(amqp.RecoveryAttemptFailed))
		require.Equal(t, 1, limEvents.count(amqp.RecoveryFailed))
		require.False(t, limConn.IsAlive())
		require.False(t, limConn.Recovering())

		// Close stops a recovery; so does closing a channel.
		closeEvents.waitCount(t, amqp.RecoveryStarted, 1, 30*time.Second)
		require.NoError(t, appClosedCh.Close(ctx))
		within(t, appClosedCh.Done(), 5*time.Second, "a channel closed during the recovery")
		require.NoError(t, closeConn.Close(ctx))
		within(t, closeConn.Done(), 5*time.Second, "a connection closed during the recovery")
		require.ErrorIs(t, closeConn.Err(), amqp.ErrClosed)
		within(t, closeCh.Done(), 5*time.Second, "its channel")
		require.Zero(t, closeEvents.count(amqp.RecoverySucceeded))
	}

	const restarts = 2
	for i := range restarts {
		s.waitProgress(200, time.Minute)
		t0 := time.Now()
		require.NoError(t, node.StopApp())
		stopped := time.Since(t0)
		// While the application is down, connections are refused, and
		// the recovering clients' attempts fail.
		_, err := amqp.Dial(ctxFor(t, 10*time.Second), node.URL())
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "a dial while the application is stopped")
		s.pubEvents.waitCount(t, amqp.RecoveryAttemptFailed, i+1, 30*time.Second)
		s.subEvents.waitCount(t, amqp.RecoveryAttemptFailed, i+1, 30*time.Second)
		if i == 0 {
			duringFirstOutage()
		}
		t1 := time.Now()
		require.NoError(t, node.StartApp())
		started := time.Since(t1)
		s.recovered(s.pubEvents, i+1)
		s.recovered(s.subEvents, i+1)
		t.Logf("restart %d: stop_app %v, start_app %v, clients recovered %v after start_app returned",
			i+1, stopped.Round(time.Millisecond), started.Round(time.Millisecond), time.Since(t1.Add(started)).Round(time.Millisecond))
	}
	s.waitProgress(200, time.Minute)
	s.finish()
	for _, ev := range s.pubEvents.all() {
		if ev.Kind == amqp.RecoveryStarted {
			require.ErrorIs(t, ev.Err, amqp.ErrConnectionForced, "stop_app closes connections with 320")
		}
	}
	roundTrip(t, s.pubConn, "after the restarts")

	// The FailFast connection recovered too, with its channel.
	ffEvents.waitCount(t, amqp.RecoverySucceeded, restarts, 30*time.Second)
	ctx := ctxFor(t, 30*time.Second)
	_, err := ffCh.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	roundTrip(t, ffConn, "fail-fast connection after the restarts")
	require.Error(t, appClosedCh.Err(), "the channel closed during the recovery stays closed")
	_, err = appClosedCh.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.ErrorIs(t, err, amqp.ErrClosed)
}

// TestRecoveryProxyFaults runs the stream through toxiproxy: the network
// goes silent (a blackhole, detected by the 2 s heartbeat), or resets every
// connection (reset_peer), or the proxy goes away; the clients reconnect
// through the proxy once it is healthy again.
func TestRecoveryProxyFaults(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	proxy := startProxy(t, node.Addr())
	s := startStream(t, streamOptions{Addrs: []string{proxy.Listen}, Heartbeat: heartbeat, ConnTimout: 5 * time.Second})
	require.Equal(t, heartbeat, s.pubConn.Heartbeat())
	recoveries := 0

	// A named exclusive queue on the consumer's connection: after a
	// blackhole the server still holds it for the lost connection until it
	// notices (by heartbeat) that the connection is dead, so the recovery
	// retries its declaration (405 RESOURCE_LOCKED) until then.
	ctx := ctxFor(t, 2*time.Minute)
	exclusive := uniqueName(t) + "-exclusive"
	exCh := openChannel(t, s.subConn)
	_, err := exCh.QueueDeclare(ctx, amqp.QueueDeclare{Queue: exclusive, Exclusive: true})
	require.NoError(t, err)
	exCons, err := exCh.Consume(ctx, amqp.BasicConsume{Queue: exclusive, NoAck: true})
	require.NoError(t, err)
	checkExclusive := func(body string) {
		t.Helper()
		ch := openChannel(t, s.pubConn)
		require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
		conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: exclusive, Mandatory: true, Body: []byte(body)})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(ctx), "routed to the exclusive queue")
		d, err := exCons.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, body, string(d.Body))
		require.NoError(t, ch.Close(ctx))
	}
	checkExclusive("before the faults")

	// waitLost waits for both connections to start recovering.
	waitStarted := func(what string) {
		t.Helper()
		s.pubEvents.waitCount(t, amqp.RecoveryStarted, recoveries+1, 30*time.Second)
		s.subEvents.waitCount(t, amqp.RecoveryStarted, recoveries+1, 30*time.Second)
	}
	waitRecovered := func(what string, t0 time.Time) {
		t.Helper()
		recoveries++
		s.recovered(s.pubEvents, recoveries)
		s.recovered(s.subEvents, recoveries)
		t.Logf("%s: both connections recovered %v after the fault began", what, time.Since(t0).Round(time.Millisecond))
	}

	for i := range 2 {
		s.waitProgress(200, time.Minute)
		t0 := time.Now()
		blackhole(t, proxy, "upstream", "downstream")
		waitStarted("blackhole")
		detected := time.Since(t0)
		for _, dir := range []string{"upstream", "downstream"} {
			require.NoError(t, proxy.Toxics.RemoveToxic(context.Background(), "blackhole_"+dir))
		}
		waitRecovered(fmt.Sprintf("blackhole %d (detected after %v)", i+1, detected.Round(time.Millisecond)), t0)
	}
	for _, ev := range s.pubEvents.all() {
		if ev.Kind == amqp.RecoveryStarted {
			require.ErrorIs(t, ev.Err, amqp.ErrHeartbeatTimeout)
		}
	}

	for i := range 2 {
		s.waitProgress(200, time.Minute)
		t0 := time.Now()
		failedBefore := s.pubEvents.count(amqp.RecoveryAttemptFailed)
		_, err := proxy.Toxics.AddToxicJson(strings.NewReader(
			`{"name":"reset","type":"reset_peer","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`))
		require.NoError(t, err)
		waitStarted("reset")
		// Attempts through the proxy are reset too until it heals.
		s.pubEvents.waitCount(t, amqp.RecoveryAttemptFailed, failedBefore+1, 30*time.Second)
		require.NoError(t, proxy.Toxics.RemoveToxic(context.Background(), "reset"))
		waitRecovered(fmt.Sprintf("reset_peer %d", i+1), t0)
	}

	s.waitProgress(200, time.Minute)
	t0 := time.Now()
	failedBefore := s.pubEvents.count(amqp.RecoveryAttemptFailed)
	proxy.Stop() // closes every connection and the listener
	waitStarted("proxy down")
	s.pubEvents.waitCount(t, amqp.RecoveryAttemptFailed, failedBefore+1, 30*time.Second)
	require.NoError(t, proxy.Start())
	waitRecovered("proxy down and up", t0)

	s.waitProgress(200, time.Minute)
	s.finish()
	require.Equal(t, proxy.Listen, s.pubConn.Addr())
	checkExclusive("after the faults")
	for _, ev := range append(s.pubEvents.all(), s.subEvents.all()...) {
		require.NotEqual(t, amqp.RecoveryEntityFailed, ev.Kind, "every entity recovered: %v", ev)
	}
}

// TestRecoveryExclusiveQueueHeld checks the recovery of a named exclusive
// queue that the server still holds for the lost connection: the client
// detects a blackholed proxy by heartbeat and reconnects directly (its
// second address), while the server keeps the old connection, and the queue,
// until its own heartbeat check drops it. The recovery retries the
// declaration (405 RESOURCE_LOCKED) until then, and the consumer goes on.
func TestRecoveryExclusiveQueueHeld(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	proxy := startProxy(t, node.Addr())
	name := uniqueName(t)
	conn := dial(t, amqp.Config{Addrs: []string{proxy.Listen, node.Addr()}, Heartbeat: heartbeat,
		ConnectionName: name, Recovery: recoveryConfig()})
	require.Equal(t, proxy.Listen, conn.Addr())
	events := watchRecovery(conn)
	ctx := ctxFor(t, time.Minute)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: name, Exclusive: true})
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: name, NoAck: true})
	require.NoError(t, err)
	roundTripOn := func(body string) {
		t.Helper()
		conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: name, Mandatory: true, Body: []byte(body)})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(ctx))
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, body, string(d.Body))
	}
	roundTripOn("before")

	t0 := time.Now()
	blackhole(t, proxy, "upstream", "downstream")
	events.waitCount(t, amqp.RecoveryStarted, 1, 30*time.Second)
	detected := time.Since(t0)
	events.waitCount(t, amqp.RecoverySucceeded, 1, time.Minute)
	t.Logf("blackhole detected after %v; recovered on %s %v after the fault began; events: %s",
		detected.Round(time.Millisecond), conn.Addr(), time.Since(t0).Round(time.Millisecond), events.kinds())
	require.Equal(t, node.Addr(), conn.Addr())
	require.Zero(t, events.count(amqp.RecoveryEntityFailed), "events:\n%s", events.dump())
	roundTripOn("after")
	require.NoError(t, cons.Err())
}

// TestRecoveryClusterNodeKilled runs the stream on a quorum queue in a
// three-node cluster, with the clients given every node's address, and
// kills (SIGKILL) the node the publisher is connected to: the clients
// recover on another node and nothing confirmed is lost.
func TestRecoveryClusterNodeKilled(t *testing.T) {
	checkLeaks(t)
	c := brokertest.StartCluster(t, brokertest.ClusterOptions{Size: 3})
	s := startStream(t, streamOptions{Addrs: c.Addrs(), QueueArgs: amqp.Table{"x-queue-type": "quorum"}})
	s.waitProgress(500, time.Minute)

	victimAddr := s.pubConn.Addr()
	subOnVictim := s.subConn.Addr() == victimAddr
	var victim *brokertest.Node
	for _, n := range c.Nodes() {
		if n.Addr() == victimAddr {
			victim = n
		}
	}
	require.NotNil(t, victim, "the publisher's node %s is a cluster node", victimAddr)
	t0 := time.Now()
	require.NoError(t, victim.Kill())
	s.recovered(s.pubEvents, 1)
	t.Logf("killed %s (%s); publisher recovered on %s %v after the kill", victim.Name(), victimAddr, s.pubConn.Addr(), time.Since(t0).Round(time.Millisecond))
	if subOnVictim {
		s.recovered(s.subEvents, 1)
		t.Logf("consumer recovered on %s", s.subConn.Addr())
	}
	require.NotEqual(t, victimAddr, s.pubConn.Addr())
	require.NotEqual(t, victimAddr, s.subConn.Addr())
	s.waitProgress(500, 2*time.Minute)
	s.finish()
}

// TestRecoveryTopology checks that topology declared through a recovering
// connection comes back after a forced close: two exchanges bound to each
// other, a server-named exclusive queue bound to the second (which gets a
// new name), and a consumer on it that keeps delivering into the same
// *Consumer. Then a consumer with Resubscribe whose queue another
// connection deletes and declares again keeps receiving.
func TestRecoveryTopology(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	name := uniqueName(t)
	conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: name, Recovery: recoveryConfig()})
	events := watchRecovery(conn)
	ctx := ctxFor(t, time.Minute)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	require.ErrorContains(t, node.CloseConnection(name+"-no-such", "test"), "not exactly one such connection: {brokertest_found,0}")

	src, dst := name+"-src", name+"-dst"
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: src, Type: "direct"}))
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: dst, Type: "fanout"}))
	t.Cleanup(func() {
		ctx := ctxFor(t, 10*time.Second)
		if ch.Err() == nil {
			require.NoError(t, ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: src}))
			require.NoError(t, ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: dst}))
		}
	})
	require.NoError(t, ch.ExchangeBind(ctx, amqp.ExchangeBind{Destination: dst, Source: src, RoutingKey: "to-dst"}))
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(ctx, amqp.QueueBind{Queue: q.Queue, Exchange: dst}))
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, NoAck: true})
	require.NoError(t, err)
	tag := cons.Tag()

	// publish sends body to src with routing key to-dst, mandatory, and
	// waits for the ack: it was routed through both exchanges to a queue.
	publish := func(ch *amqp.Channel, exchange, key, body string) {
		t.Helper()
		conf, err := ch.Publish(ctx, amqp.Publishing{Exchange: exchange, RoutingKey: key, Mandatory: true, Body: []byte(body)})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(ctx), "published %q to %q with key %q", body, exchange, key)
	}
	receive := func(cons *amqp.Consumer, body string) {
		t.Helper()
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, body, string(d.Body))
	}
	publish(ch, src, "to-dst", "before")
	receive(cons, "before")

	// A manual-ack consumer on a named queue on a second channel: a
	// delivery received before the close but acknowledged after it is
	// stale, and the server delivers the message again.
	ackCh := openChannel(t, conn)
	q3 := name + "-acks"
	_, err = ackCh.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q3})
	require.NoError(t, err)
	t.Cleanup(func() {
		if ackCh.Err() == nil {
			_, err := ackCh.QueueDelete(ctxFor(t, 10*time.Second), amqp.QueueDelete{Queue: q3})
			require.NoError(t, err)
		}
	})
	require.NoError(t, ackCh.Qos(ctx, amqp.BasicQos{PrefetchCount: 10}))
	cons3, err := ackCh.Consume(ctx, amqp.BasicConsume{Queue: q3})
	require.NoError(t, err)
	publish(ch, "", q3, "unacked")
	held, err := cons3.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "unacked", string(held.Body))
	require.False(t, held.Redelivered)

	require.NoError(t, node.CloseConnection(name, "topology recovery test"))
	events.waitCount(t, amqp.RecoverySucceeded, 1, 30*time.Second)
	renamed := events.waitFor(t, time.Second, "RecoveryQueueRenamed", func(ev amqp.RecoveryEvent) bool {
		return ev.Kind == amqp.RecoveryQueueRenamed
	})
	t.Logf("events: %s; queue %q is now %q", events.kinds(), renamed.OldName, renamed.NewName)
	require.Equal(t, q.Queue, renamed.OldName)
	require.NotEmpty(t, renamed.NewName)
	require.NotEqual(t, q.Queue, renamed.NewName)
	require.Zero(t, events.count(amqp.RecoveryEntityFailed), "every entity recovered:\n%s", events.dump())
	started := events.waitFor(t, time.Second, "RecoveryStarted", func(ev amqp.RecoveryEvent) bool { return ev.Kind == amqp.RecoveryStarted })
	require.ErrorIs(t, started.Err, amqp.ErrConnectionForced)
	succeeded := events.waitFor(t, time.Second, "RecoverySucceeded", func(ev amqp.RecoveryEvent) bool { return ev.Kind == amqp.RecoverySucceeded })
	require.Equal(t, node.Addr(), succeeded.Addr)
	require.Equal(t, node.Addr(), conn.Addr())
	require.True(t, conn.IsAlive())
	require.False(t, conn.Recovering())
	require.NoError(t, conn.Err())

	publish(ch, src, "to-dst", "after")
	receive(cons, "after")
	require.Equal(t, tag, cons.Tag())
	require.NoError(t, cons.Err())

	require.ErrorIs(t, held.Ack(ctx, amqp.AckOptions{}), amqp.ErrStaleDelivery, "a delivery from before the reconnect")
	again, err := cons3.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "unacked", string(again.Body))
	require.True(t, again.Redelivered, "the server requeued it when the old connection closed")
	require.NoError(t, again.Ack(ctx, amqp.AckOptions{}))
	require.ErrorIs(t, again.Ack(ctx, amqp.AckOptions{}), amqp.ErrAlreadySettled)
	// The new queue is the one bound and consumed: the old name is gone.
	other := dial(t, amqp.Config{Addrs: []string{node.Addr()}})
	otherCh := openChannel(t, other)
	_, err = otherCh.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q.Queue, Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound, "the exclusive queue went with the old connection")
	otherCh = openChannel(t, other)

	// Resubscribe: another connection deletes the queue (the server
	// cancels the consumer), then declares it again.
	q2 := name + "-resub"
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q2, AutoDelete: false})
	require.NoError(t, err)
	t.Cleanup(func() {
		if otherCh.Err() == nil {
			_, err := otherCh.QueueDelete(ctxFor(t, 10*time.Second), amqp.QueueDelete{Queue: q2})
			require.NoError(t, err)
		}
	})
	cancels := make(chan string, 10)
	cons2, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: q2, NoAck: true},
		amqp.ConsumerOptions{Resubscribe: true, OnCancel: func(tag string) { cancels <- tag }})
	require.NoError(t, err)
	publish(ch, "", q2, "resub before")
	receive(cons2, "resub before")

	_, err = otherCh.QueueDelete(ctx, amqp.QueueDelete{Queue: q2})
	require.NoError(t, err)
	select {
	case got := <-cancels:
		require.Equal(t, cons2.Tag(), got)
	case <-time.After(10 * time.Second):
		t.Fatal("no OnCancel after the queue was deleted")
	}
	// The library retries while the queue is missing.
	events.waitFor(t, 30*time.Second, "a failed resubscription while the queue is missing", func(ev amqp.RecoveryEvent) bool {
		return ev.Kind == amqp.RecoveryEntityFailed && strings.Contains(ev.Entity, q2)
	})
	require.NoError(t, cons2.Err(), "the consumer waits to resubscribe rather than ending")
	_, err = otherCh.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q2})
	require.NoError(t, err)
	resub := events.waitFor(t, 30*time.Second, "RecoveryConsumerResubscribed", func(ev amqp.RecoveryEvent) bool {
		return ev.Kind == amqp.RecoveryConsumerResubscribed
	})
	t.Logf("resubscribed: %v", resub)
	require.Contains(t, resub.Entity, q2)
	publish(otherCh, "", q2, "resub after")
	receive(cons2, "resub after")
	require.NoError(t, cons2.Err())
	require.True(t, conn.IsAlive())
	t.Logf("events: %s", events.kinds())
}

// TestRecoveryFatal checks that a recovery whose reconnection the server
// refuses for good (the vhost, the user or the permissions are gone) ends
// the connection with that error rather than retrying forever.
func TestRecoveryFatal(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	ctl := func(t *testing.T, args ...string) {
		t.Helper()
		_, err := node.Ctl(args...)
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T, vhost, user string)
		want  []error // the end error matches one of these
	}{
		{"VhostDeleted", func(t *testing.T, vhost, user string) {
			ctl(t, "-q", "delete_vhost", vhost) // closes the vhost's connections
		}, []error{amqp.ErrNotAllowed}},
		{"UserDeleted", func(t *testing.T, vhost, user string) {
			ctl(t, "-q", "delete_user", user)
		}, []error{amqp.ErrAccessRefused, amqp.ErrAuthentication}},
		{"PermissionsCleared", func(t *testing.T, vhost, user string) {
			ctl(t, "-q", "clear_permissions", "-p", vhost, user)
		}, []error{amqp.ErrNotAllowed, amqp.ErrAccessRefused}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := uniqueName(t)
			vhost, user, pass := name+"-vhost", name+"-user", "secret-"+name
			ctl(t, "-q", "add_vhost", vhost)
			ctl(t, "-q", "add_user", user, pass)
			ctl(t, "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
			t.Cleanup(func() { // what the fault left
				node.Ctl("-q", "delete_vhost", vhost)
				node.Ctl("-q", "delete_user", user)
			})
			conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, Username: user, Password: pass, Vhost: vhost,
				ConnectionName: name, Recovery: recoveryConfig()})
			events := watchRecovery(conn)
			ch := openChannel(t, conn)
			ctx := ctxFor(t, time.Minute)
			q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
			require.NoError(t, err)
			cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, NoAck: true})
			require.NoError(t, err)

			tc.fault(t, vhost, user)
			// The connection may outlive the change (deleting a user or
			// its permissions does not close it): close it, so that the
			// client must reconnect.
			if _, err := node.ConnectionPID(name); err == nil {
				// It may close on its own meanwhile.
				if err := node.CloseConnection(name, "recovery test: "+tc.name); err != nil {
					t.Logf("close_connection: %v", err)
				}
			}
			elapsed := within(t, conn.Done(), 60*time.Second, "conn.Done after the refusal")
			err = conn.Err()
			t.Logf("connection ended %v after the fault (and close_connection): %v; events: %s", elapsed, err, events.kinds())
			matched := false
			for _, want := range tc.want {
				matched = matched || errors.Is(err, want)
			}
			require.True(t, matched, "end error %v matches one of %v", err, tc.want)
			require.False(t, conn.IsAlive())
			require.False(t, conn.Recovering())
			failed := events.waitFor(t, 5*time.Second, "RecoveryFailed", func(ev amqp.RecoveryEvent) bool { return ev.Kind == amqp.RecoveryFailed })
			require.Equal(t, 1, events.count(amqp.RecoveryStarted), "events:\n%s", events.dump())
			require.Equal(t, 1, events.count(amqp.RecoveryFailed))
			require.Zero(t, events.count(amqp.RecoverySucceeded))
			require.Equal(t, failed.Err.Error(), err.Error(), "RecoveryFailed reports the end error")
			within(t, ch.Done(), 5*time.Second, "channel Done")
			within(t, cons.Done(), 5*time.Second, "consumer Done")
			require.Error(t, ch.Err())
			_, err = conn.Channel(ctx)
			require.ErrorIs(t, err, amqp.ErrClosed)
		})
	}
}
