package brokertest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	RPCLoop    bool          // a third goroutine makes synchronous calls (passive declares) on the publisher's connection
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
	rpcDone     chan struct{}
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
	rpcCalls    int          // RPCLoop: calls made
	rpcErrs     int          // RPCLoop: calls that failed, every one recoverable
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
		<-s.rpcDone
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
	s.rpcDone = make(chan struct{})
	if opts.RPCLoop {
		rpcCh := openChannel(t, s.pubConn)
		go s.rpcLoop(runCtx, rpcCh)
	} else {
		close(s.rpcDone)
	}
	go s.publish(runCtx, pubCh)
	go s.consume(subCtx, cons)
	return s
}

// rpcLoop makes passive queue declarations one after another until ctx
// ends: a call in flight when the connection is lost fails with a
// recoverable error, and later calls wait for the recovery.
func (s *stream) rpcLoop(ctx context.Context, ch *amqp.Channel) {
	defer close(s.rpcDone)
	for ctx.Err() == nil {
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: s.queue, Passive: true})
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.rpcCalls++
		if err != nil {
			s.rpcErrs++
			if !amqp.Recoverable(err) || !errors.Is(err, amqp.ErrClosed) {
				s.t.Errorf("passive declare during the stream: %v (Recoverable %t)", err, amqp.Recoverable(err))
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
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
		if err := d.Ack(amqp.AckOptions{Multiple: true}); err != nil && ctx.Err() == nil {
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
	if s.opts.RPCLoop {
		t.Logf("synchronous calls during the stream: %d, failed (recoverable, in flight at a loss) %d", s.rpcCalls, s.rpcErrs)
	}
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
		// The server sees the consumer with its tag and its channel's
		// prefetch: basic.qos was applied again on every reopened channel.
		out, err := node.Ctl("-q", "list_consumers", "--no-table-headers", "queue_name", "consumer_tag", "prefetch_count")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(s.queue)+`\s+stream-consumer\s+200\s*$`, out)
		require.Equal(t, pubCloses, s.pubEvents.count(amqp.RecoveryStarted))
		require.Equal(t, pubCloses, s.pubEvents.count(amqp.RecoverySucceeded))
		require.Equal(t, subCloses, s.subEvents.count(amqp.RecoveryStarted))
		require.Equal(t, subCloses, s.subEvents.count(amqp.RecoverySucceeded))
	})

	// One connection for both, with RecoveryConfig.Republish: the library
	// republishes what was unconfirmed.
	t.Run("SharedConnectionRepublish", func(t *testing.T) {
		start := time.Now()
		s := startStream(t, streamOptions{Addrs: []string{node.Addr()}, Shared: true, Republish: true, RPCLoop: true})
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
	cancelQueue := uniqueName(t) + "-cancelled"
	cancelCh := openChannel(t, s.subConn)
	_, err := cancelCh.QueueDeclare(ctxFor(t, 10*time.Second), amqp.QueueDeclare{Queue: cancelQueue, Durable: true})
	require.NoError(t, err)
	cancelled, err := cancelCh.Consume(ctxFor(t, 10*time.Second), amqp.BasicConsume{Queue: cancelQueue})
	require.NoError(t, err)
	// Calls made during the first outage, in goroutines.
	type outageResult struct {
		ch     *amqp.Channel
		err    error
		cancel bool
	}
	duringOutage := make(chan outageResult, 2)

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

		// Channel and Consumer.Cancel wait for the recovery: they return
		// once it is done (checked after the restart).
		go func() {
			ch, err := s.subConn.Channel(ctxFor(t, time.Minute))
			duringOutage <- outageResult{ch: ch, err: err}
		}()
		go func() {
			duringOutage <- outageResult{err: cancelled.Cancel(ctxFor(t, time.Minute)), cancel: true}
		}()

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
		_, err = amqp.Dial(ctxFor(t, 10*time.Second), node.URL())
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
	// stop_app closes connections with 320, then the socket. A client
	// writing at that moment may get a reset first, which discards the
	// unread connection.close (TCP drops received data on a reset): the
	// publisher then sees the connection lost rather than forced.
	forced, reset := 0, 0
	for _, ev := range append(s.pubEvents.all(), s.subEvents.all()...) {
		if ev.Kind == amqp.RecoveryStarted {
			switch {
			case errors.Is(ev.Err, amqp.ErrConnectionForced):
				forced++
			case errors.Is(ev.Err, amqp.ErrConnectionLost):
				reset++
			default:
				t.Errorf("recovery started by %v", ev.Err)
			}
		}
	}
	t.Logf("recoveries started by 320 CONNECTION_FORCED: %d, by a reset: %d", forced, reset)
	roundTrip(t, s.pubConn, "after the restarts")

	// The FailFast connection recovered too, with its channel.
	ffEvents.waitCount(t, amqp.RecoverySucceeded, restarts, 30*time.Second)
	ctx := ctxFor(t, 30*time.Second)
	_, err = ffCh.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)

	// The Channel and Cancel calls made during the outage returned.
	var during *amqp.Channel
	for range 2 {
		select {
		case r := <-duringOutage:
			require.NoError(t, r.err, "cancel %t", r.cancel)
			if !r.cancel {
				during = r.ch
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a call made during the recovery did not return after it")
		}
	}
	within(t, cancelled.Done(), 5*time.Second, "a consumer cancelled during the recovery")
	require.ErrorIs(t, cancelled.Err(), amqp.ErrConsumerCancelled)
	ok, err := during.QueueDeclare(ctx, amqp.QueueDeclare{Queue: cancelQueue, Passive: true})
	require.NoError(t, err)
	require.Zero(t, ok.ConsumerCount, "the consumer cancelled during the recovery is not subscribed")
	_, err = during.QueueDelete(ctx, amqp.QueueDelete{Queue: cancelQueue})
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

// zombieConn is a client socket that can be made to fail for the client
// while it stays open for the server: after kill, the client's reads and
// writes fail (so it starts a recovery), but the socket keeps sending the
// server heartbeats for hold, then closes. The server thus keeps the old
// connection, and its exclusive queues, for that long.
type zombieConn struct {
	net.Conn
	mu       sync.Mutex // serializes writes with the zombie's heartbeats
	killed   bool
	released chan struct{} // closed when the socket really closes
}

func (z *zombieConn) Write(p []byte) (int, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.killed {
		return 0, errors.New("zombieConn: killed")
	}
	return z.Conn.Write(p)
}

// Close is a no-op after kill: the zombie closes the socket when done.
func (z *zombieConn) Close() error {
	z.mu.Lock()
	killed := z.killed
	z.mu.Unlock()
	if killed {
		return nil
	}
	return z.Conn.Close()
}

// kill makes the client's pending and later reads and writes fail, and keeps
// the socket alive for the server for hold.
func (z *zombieConn) kill(hold time.Duration) {
	z.mu.Lock()
	z.killed = true
	z.mu.Unlock()
	z.Conn.SetReadDeadline(time.Now()) // the client's reader fails at once
	go func() {
		defer close(z.released)
		time.Sleep(100 * time.Millisecond) // the client's reader has seen its error
		z.Conn.SetReadDeadline(time.Time{})
		drained := make(chan struct{})
		go func() { // read what the server sends, so that it never blocks
			defer close(drained)
			io.Copy(io.Discard, z.Conn)
		}()
		end := time.After(hold)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
	loop:
		for {
			select {
			case <-tick.C:
				z.mu.Lock()
				z.Conn.Write(heartbeatFrame)
				z.mu.Unlock()
			case <-end:
				break loop
			}
		}
		z.Conn.Close()
		<-drained
	}()
}

// TestRecoveryExclusiveQueueHeld checks the recovery of a named exclusive
// queue that the server still holds for the lost connection, as after a
// network failure the client noticed first: the recovery retries the
// declaration (405 RESOURCE_LOCKED) until the server lets the old
// connection go, and the consumer goes on.
func TestRecoveryExclusiveQueueHeld(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	const hold = 3 * time.Second

	// setup connects through a zombieConn (the first dial only), declares
	// the exclusive queue and a consumer on it, round-trips a message, and
	// kills the socket.
	setup := func(t *testing.T) (conn *amqp.Connection, events *eventLog, first *zombieConn, dials *atomic.Int32, roundTripOn func(string)) {
		name := uniqueName(t)
		var dialer net.Dialer
		dials = new(atomic.Int32)
		conn = dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: name, Recovery: recoveryConfig(),
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err != nil || dials.Add(1) > 1 {
					return c, err
				}
				first = &zombieConn{Conn: c, released: make(chan struct{})}
				return first, nil
			}})
		events = watchRecovery(conn)
		ctx := ctxFor(t, time.Minute)
		ch := openChannel(t, conn)
		require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: name, Exclusive: true})
		require.NoError(t, err)
		cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: name, NoAck: true})
		require.NoError(t, err)
		roundTripOn = func(body string) {
			t.Helper()
			conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: name, Mandatory: true, Body: []byte(body)})
			require.NoError(t, err)
			require.NoError(t, conf.Wait(ctx))
			d, err := cons.Next(ctx)
			require.NoError(t, err)
			require.Equal(t, body, string(d.Body))
			require.NoError(t, cons.Err())
		}
		roundTripOn("before")
		first.kill(hold)
		t.Cleanup(func() { <-first.released })
		events.waitCount(t, amqp.RecoveryStarted, 1, 30*time.Second)
		require.ErrorIs(t, events.all()[0].Err, amqp.ErrConnectionLost)
		return conn, events, first, dials, roundTripOn
	}

	t.Run("Recovered", func(t *testing.T) {
		t0 := time.Now()
		_, events, first, _, roundTripOn := setup(t)
		events.waitCount(t, amqp.RecoverySucceeded, 1, time.Minute)
		select {
		case <-first.released:
		default:
			t.Fatal("recovered before the server released the old connection's exclusive queue")
		}
		t.Logf("recovered %v after the fault, the old socket held open for %v; events: %s",
			time.Since(t0).Round(time.Millisecond), hold, events.kinds())
		require.Zero(t, events.count(amqp.RecoveryEntityFailed), "events:\n%s", events.dump())
		roundTripOn("after")
	})

	// Close while the recovery is restoring the topology on the new
	// connection (it retries the declaration for as long as the server
	// holds the queue): Close ends the connection at once.
	t.Run("CloseDuringRestore", func(t *testing.T) {
		conn, events, first, dials, _ := setup(t)
		for dials.Load() < 2 {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // the handshake is done; the declaration is being retried
		select {
		case <-first.released:
			t.Fatal("the old connection was released already: not closing during the restore")
		default:
		}
		require.True(t, conn.Recovering())
		require.NoError(t, conn.Close(ctxFor(t, 10*time.Second)))
		within(t, conn.Done(), time.Second, "Done after Close")
		require.ErrorIs(t, conn.Err(), amqp.ErrClosed)
		require.False(t, conn.Recovering())
		require.Zero(t, events.count(amqp.RecoverySucceeded), "events:\n%s", events.dump())
	})
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

	// A transaction open when the connection is lost cannot be committed:
	// the server discarded its publish.
	txCh := openChannel(t, conn)
	require.NoError(t, txCh.TxSelect(ctx))
	_, err = txCh.Publish(ctx, amqp.Publishing{RoutingKey: q3, Body: []byte("in a lost transaction")})
	require.NoError(t, err)

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

	require.ErrorIs(t, held.Ack(amqp.AckOptions{}), amqp.ErrStaleDelivery, "a delivery from before the reconnect")
	again, err := cons3.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "unacked", string(again.Body))
	require.True(t, again.Redelivered, "the server requeued it when the old connection closed")
	require.NoError(t, again.Ack(amqp.AckOptions{}))
	require.ErrorIs(t, again.Ack(amqp.AckOptions{}), amqp.ErrAlreadySettled)

	require.ErrorIs(t, txCh.TxCommit(ctx), amqp.ErrTransactionLost)
	// The channel is in transaction mode again, and the next transaction
	// starts empty: only what it publishes is committed.
	_, err = txCh.Publish(ctx, amqp.Publishing{RoutingKey: q3, Body: []byte("committed")})
	require.NoError(t, err)
	require.NoError(t, txCh.TxCommit(ctx))
	d3, err := cons3.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "committed", string(d3.Body), "the lost transaction's publish never arrives")
	require.NoError(t, d3.Ack(amqp.AckOptions{}))
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

// TestRecoveryManyChannels recovers a connection with many channels, each
// with a server-named exclusive queue (renamed by the recovery) and a
// consumer on it: every consumer follows its queue's new name.
func TestRecoveryManyChannels(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	name := uniqueName(t)
	conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: name, Recovery: recoveryConfig()})
	events := watchRecovery(conn)
	ctx := ctxFor(t, time.Minute)
	const n = 100
	type entry struct {
		ch    *amqp.Channel
		queue string
		cons  *amqp.Consumer
	}
	entries := make([]entry, n)
	for i := range entries {
		ch := openChannel(t, conn)
		q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
		require.NoError(t, err)
		cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, NoAck: true})
		require.NoError(t, err)
		entries[i] = entry{ch, q.Queue, cons}
	}
	pubCh := openChannel(t, conn)
	require.NoError(t, pubCh.ConfirmSelect(ctx, amqp.ConfirmSelect{}))

	t0 := time.Now()
	require.NoError(t, node.CloseConnection(name, "many channels"))
	events.waitCount(t, amqp.RecoverySucceeded, 1, time.Minute)
	t.Logf("%d channels, queues and consumers recovered in %v; events: %s", n, time.Since(t0).Round(time.Millisecond), events.kinds())
	require.Zero(t, events.count(amqp.RecoveryEntityFailed), "events:\n%s", events.dump())
	renamed := map[string]string{}
	for _, ev := range events.all() {
		if ev.Kind == amqp.RecoveryQueueRenamed {
			renamed[ev.OldName] = ev.NewName
		}
	}
	require.Len(t, renamed, n)
	for i, e := range entries {
		newName, ok := renamed[e.queue]
		require.True(t, ok, "queue %q renamed", e.queue)
		body := fmt.Sprintf("to consumer %d", i)
		conf, err := pubCh.Publish(ctx, amqp.Publishing{RoutingKey: newName, Mandatory: true, Body: []byte(body)})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(ctx), "routed to %q", newName)
		d, err := e.cons.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, body, string(d.Body))
		require.Equal(t, e.cons.Tag(), d.ConsumerTag)
		require.NoError(t, e.ch.Err())
	}
}

// TestRecoveryWhileBlocked recovers a connection the server had blocked
// (memory alarm) onto a new connection the server never blocks, since the
// alarm is lifted while the client reconnects: the recovered connection is
// not blocked, publishes go through, and OnBlocked listeners are told the
// block is gone.
func TestRecoveryWhileBlocked(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	name := uniqueName(t)
	// The reconnection's dial waits for gate, so that the alarm is lifted
	// before the new connection exists.
	gate := make(chan struct{})
	var dialer net.Dialer
	var dials atomic.Int32
	conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: name, Recovery: recoveryConfig(),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) > 1 {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return dialer.DialContext(ctx, network, addr)
		}})
	events := watchRecovery(conn)
	var blockMu sync.Mutex
	var blocks []amqp.Blocking
	conn.OnBlocked(func(b amqp.Blocking) {
		blockMu.Lock()
		blocks = append(blocks, b)
		blockMu.Unlock()
	})
	ctx := ctxFor(t, time.Minute)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	q := name
	_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q})
	require.NoError(t, err)
	t.Cleanup(func() {
		if ch.Err() == nil {
			_, err := ch.QueueDelete(ctxFor(t, 10*time.Second), amqp.QueueDelete{Queue: q})
			require.NoError(t, err)
		}
	})

	t.Cleanup(func() { // the alarm is global to the node: always lift it
		if _, err := node.Ctl("set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("lifting the memory alarm: %v", err)
		}
	})
	_, err = node.Ctl("set_vm_memory_high_watermark", "0.0000001")
	require.NoError(t, err)
	deadline := time.Now().Add(15 * time.Second)
	for {
		// Publish waits while the connection is blocked.
		pubCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err := ch.Publish(pubCtx, amqp.Publishing{RoutingKey: q, Body: []byte("before the block")})
		cancel()
		if b, _ := conn.Blocked(); b {
			break
		}
		require.NoError(t, err)
		require.True(t, time.Now().Before(deadline), "no connection.blocked within 15 s of the memory alarm")
		time.Sleep(100 * time.Millisecond)
	}

	require.NoError(t, node.CloseConnection(name, "blocked"))
	events.waitCount(t, amqp.RecoveryStarted, 1, 30*time.Second)
	_, err = node.Ctl("set_vm_memory_high_watermark", "0.4")
	require.NoError(t, err)
	close(gate)
	events.waitCount(t, amqp.RecoverySucceeded, 1, 30*time.Second)
	blocked, reason := conn.Blocked()
	require.False(t, blocked, "the new connection is not blocked (old reason %q)", reason)
	pubCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conf, err := ch.Publish(pubCtx, amqp.Publishing{RoutingKey: q, Body: []byte("after the recovery")})
	cancel()
	require.NoError(t, err)
	require.NoError(t, conf.Wait(ctx))

	// Listeners run in order on one goroutine: whatever OnBlocked was told
	// before RecoverySucceeded has run by now.
	blockMu.Lock()
	seen := slices.Clone(blocks)
	blockMu.Unlock()
	t.Logf("OnBlocked saw %+v; Blocked() is %t", seen, blocked)
	require.NotEmpty(t, seen)
	require.True(t, seen[0].Active)
	require.Equal(t, amqp.Blocking{Active: false}, seen[len(seen)-1], "OnBlocked is told that the block ended with the lost connection")
}

// TestRecoveryChannelMax recovers connections whose channels crowd the new
// connection's channel_max (set on the shared node, at run time, for the
// connections it accepts from then on): with every channel number in use,
// and with a channel_max smaller than before, so that some channels cannot
// come back.
func TestRecoveryChannelMax(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	orig, err := node.Ctl("eval", "application:get_env(rabbit, channel_max).")
	require.NoError(t, err)
	m := regexp.MustCompile(`\{ok,(\d+)\}`).FindStringSubmatch(orig)
	require.NotNil(t, m, "channel_max: %s", orig)
	setChannelMax := func(t *testing.T, n string) {
		t.Helper()
		_, err := node.Ctl("eval", "application:set_env(rabbit, channel_max, "+n+").")
		require.NoError(t, err)
	}
	t.Cleanup(func() { setChannelMax(t, m[1]) })

	// Every channel number the server allows is the application's: the
	// recovery must still restore the topology and the channels.
	t.Run("AllChannelsInUse", func(t *testing.T) {
		t.Cleanup(func() { setChannelMax(t, m[1]) })
		setChannelMax(t, "4")
		name := uniqueName(t)
		conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: name, Recovery: recoveryConfig()})
		setChannelMax(t, m[1])
		require.Equal(t, uint16(4), conn.ChannelMax())
		events := watchRecovery(conn)
		ctx := ctxFor(t, time.Minute)
		chans := make([]*amqp.Channel, 4)
		for i := range chans {
			chans[i] = openChannel(t, conn)
		}
		_, err := conn.Channel(ctx)
		require.ErrorIs(t, err, amqp.ErrNoFreeChannel)
		_, err = chans[0].QueueDeclare(ctx, amqp.QueueDeclare{Queue: name, AutoDelete: true})
		require.NoError(t, err)
		cons, err := chans[0].Consume(ctx, amqp.BasicConsume{Queue: name, NoAck: true})
		require.NoError(t, err)

		setChannelMax(t, "4")
		require.NoError(t, node.CloseConnection(name, "all channels in use"))
		events.waitCount(t, amqp.RecoveryStarted, 1, 30*time.Second)
		deadline := time.After(30 * time.Second)
		for events.count(amqp.RecoverySucceeded) == 0 {
			select {
			case <-deadline:
				t.Fatalf("no recovery within 30 s; Recovering()=%t; events:\n%s", conn.Recovering(), events.dump())
			case <-time.After(50 * time.Millisecond):
			}
		}
		setChannelMax(t, m[1])
		t.Logf("events: %s", events.kinds())
		for _, ch := range chans {
			require.NoError(t, ch.Err())
		}
		require.Zero(t, events.count(amqp.RecoveryEntityFailed), "events:\n%s", events.dump())
		conf, err := chans[1].Publish(ctx, amqp.Publishing{RoutingKey: name, Body: []byte("after")})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(ctx))
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, "after", string(d.Body))
	})

	// The new connection allows fewer channels than the old one had: the
	// channels above its channel_max end, with an event each; the others
	// are recovered.
	t.Run("ChannelMaxShrinks", func(t *testing.T) {
		t.Cleanup(func() { setChannelMax(t, m[1]) })
		name := uniqueName(t)
		conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: name, Recovery: recoveryConfig()})
		events := watchRecovery(conn)
		ctx := ctxFor(t, time.Minute)
		chans := make([]*amqp.Channel, 6)
		for i := range chans {
			chans[i] = openChannel(t, conn)
		}
		setChannelMax(t, "4")
		require.NoError(t, node.CloseConnection(name, "channel_max shrinks"))
		events.waitCount(t, amqp.RecoverySucceeded, 1, 30*time.Second)
		setChannelMax(t, m[1])
		t.Logf("events: %s", events.kinds())
		require.Equal(t, uint16(4), conn.ChannelMax())
		var alive, ended int
		for _, ch := range chans {
			if ch.ID() <= 4 {
				require.NoError(t, ch.Err(), "channel %d", ch.ID())
				_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
				require.NoError(t, err, "channel %d", ch.ID())
				alive++
			} else {
				within(t, ch.Done(), 5*time.Second, "a channel above the new channel_max ending")
				require.ErrorIs(t, ch.Err(), amqp.ErrClosed)
				ended++
			}
		}
		require.Equal(t, 4, alive)
		require.Equal(t, 2, ended)
		require.Equal(t, 2, events.count(amqp.RecoveryEntityFailed), "events:\n%s", events.dump())
	})
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
			recoveringAfterDone := conn.Recovering()
			chEndedWithConn := ch.Err() != nil
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
			require.False(t, conn.Recovering(), "a connection that has ended is not recovering")
			require.False(t, recoveringAfterDone, "Recovering() right after Done() closed")
			require.True(t, chEndedWithConn, "the channel had ended when Done() closed")
		})
	}
}
