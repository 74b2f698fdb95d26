package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// Regression tests from a review of connection recovery. Each failed because
// of a bug the comment above it describes; all are fixed.

// BUG 1 (recovery.go recoverLoop/restore, channel_recovery.go recoveryCall,
// connection.go linkEnded): when the NEW link dies while the recovery is
// restoring onto it, a recovery call waiting for its reply (channel.open,
// basic.qos, basic.consume, the topology declarations, the temporary
// channel's close) is never resolved: linkEnded sees a recovery already
// running and does nothing, and the channels on the new link are only
// detached by retire, which recoverLoop calls only after restore returns.
// restore waits on p.reply or on a ctx that only Close cancels, so the
// recovery is stuck for good: no further attempt, Recovering() stays true,
// and every call waiting for the recovery waits forever.
func TestRecoveryGoesOnWhenTheNewLinkDiesDuringRestore(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.ChannelOpen); ok && idx == 1 {
			c.Drop() // the node dies again while the channel is being reopened
			return true, nil
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)

	b.conn(t, 0).Drop()
	// Connection 1 dies on the channel.open; connection 2 must follow.
	if !eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }) {
		t.Fatalf("the recovery never went past the link that died while restoring (connections made: %d, recovering: %t); events:\n%s",
			b.senderCount(), conn.Recovering(), events)
	}
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "x", Type: "direct"}))
}

// BUG 1b: the same stall, seen by the application: a channel that was
// already reattached to the new link (state open) publishes after that link
// died; appendFrames fails, sendError waits on the dead link's detached
// channel without any bound by ctx, and since the stuck recovery never
// retires the link, Publish never returns, whatever its ctx says.
func TestPublishHonoursCtxWhenTheNewLinkDiesDuringRestore(t *testing.T) {
	dropped := make(chan struct{})
	var once sync.Once
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.ChannelOpen); ok && idx == 1 && cmd.Channel == 2 {
			c.Drop() // channel 1 is restored; the link dies while channel 2 is
			once.Do(func() { close(dropped) })
			return true, nil
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{}))
	require.NoError(t, err)
	closeConn(t, conn)
	ch1, err := conn.Channel(ctx)
	require.NoError(t, err)
	_, err = conn.Channel(ctx)
	require.NoError(t, err)

	b.conn(t, 0).Drop()
	<-dropped
	time.Sleep(100 * time.Millisecond) // the client notices the loss

	pubCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var perr error
	ok := returnsWithin(3*time.Second, func() {
		_, perr = ch1.Publish(pubCtx, amqp.Publishing{RoutingKey: "q", Body: []byte("x")})
	})
	require.True(t, ok, "Publish with a 500ms ctx still blocked after 3s (Recovering=%t)", conn.Recovering())
	_ = perr
}

// BUG 2 (recovery.go recoverLoop, the closeRequested branch after a failed
// restore): when the new link has died during restore and Close is then
// called, recoverLoop sees closeRequested, calls l.shutdown (a no-op: the
// link already ended, and its linkEnded ran before Close and started no
// finalize because a recovery was running) and returns without
// c.finalize. c.done is never closed: Close waits until its ctx ends,
// Done() never closes, Err() stays nil and every waiting call waits on.
func TestCloseEndsTheConnectionAfterTheNewLinkDiedDuringRestore(t *testing.T) {
	dropped := make(chan struct{})
	var once sync.Once
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.ChannelOpen); ok && idx == 1 {
			c.Drop()
			once.Do(func() { close(dropped) })
			return true, nil
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{}))
	require.NoError(t, err)
	_, err = conn.Channel(ctx)
	require.NoError(t, err)

	b.conn(t, 0).Drop()
	<-dropped
	time.Sleep(100 * time.Millisecond) // the client notices the second loss

	closeCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	require.NoError(t, conn.Close(closeCtx), "Close of a connection whose recovery lost its new link")
	select {
	case <-conn.Done():
	default:
		t.Fatal("Done not closed after Close returned")
	}
}

// BUG 3 (channel.go Channel.end, channel_recovery.go detach/republishKept):
// with Republish, detach moves the unconfirmed publishes from the confirm
// tracker to ch.republish. When the channel then ends before they are sent
// again — Close of the connection during the recovery, Channel.Close while
// recovering, MaxAttempts reached, a fatal refusal, a channel that cannot
// be reopened — end() only fails ch.confirms (now empty); nothing resolves
// ch.republish. Those Confirmations never resolve: Wait blocks until its
// ctx ends, Done() never closes.
func TestRepublishKeptConfirmationsResolveWhenTheConnectionEnds(t *testing.T) {
	for _, how := range []string{"connection Close", "channel Close", "max attempts"} {
		t.Run(how, func(t *testing.T) {
			b := newRecordingBroker(t, amqptest.Options{}, nil)
			ctx := t.Context()
			var down atomic.Bool
			rc := amqp.RecoveryConfig{Republish: true}
			if how == "max attempts" {
				rc.MaxAttempts = 3
			}
			cfg := recoveringConfig(b, rc)
			cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if down.Load() {
					return nil, errors.New("node down")
				}
				return b.srv.Dial(ctx, network, addr)
			}
			conn, err := amqp.DialConfig(ctx, cfg)
			require.NoError(t, err)
			closeConn(t, conn)
			ch, err := conn.Channel(ctx)
			require.NoError(t, err)
			require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
			b.holdAcks.Store(true)
			conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("unconfirmed")})
			require.NoError(t, err)
			require.True(t, eventually(5*time.Second, func() bool { return len(b.methodsOf(0)) >= 3 }))

			down.Store(true)
			b.conn(t, 0).Drop()
			switch how {
			case "connection Close":
				require.True(t, eventually(5*time.Second, conn.Recovering))
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				require.NoError(t, conn.Close(cctx))
			case "channel Close":
				require.True(t, eventually(5*time.Second, conn.Recovering))
				require.NoError(t, ch.Close(ctx))
			case "max attempts":
				<-conn.Done()
			}
			select {
			case <-ch.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the channel did not end")
			}

			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			err = conf.Wait(wctx)
			require.NotErrorIs(t, err, context.DeadlineExceeded,
				"the Confirmation of a publish kept for republishing never resolved after its channel ended")
			require.ErrorIs(t, err, amqp.ErrClosed)
		})
	}
}

// BUG 4 (channel.go Channel.Close, the chRecovering branch): Close on a
// channel that is being reattached ("nothing to tell a server that has not
// seen the channel yet") ends it locally and frees its number, but the
// recovery may already have sent channel.open (and qos, basic.consume...)
// on the new link: the server keeps the channel open, with its consumers
// (holding prefetched messages unacknowledged for the life of the
// connection). The freed number is then handed out again and the next
// Channel sends channel.open on a channel the server has open, which
// RabbitMQ answers by closing the whole connection (504 CHANNEL_ERROR
// "second 'channel.open' seen").
func TestChannelCloseDuringReattachClosesTheServersChannel(t *testing.T) {
	release := make(chan struct{})
	openSeen := make(chan struct{})
	var once sync.Once
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.ChannelOpen); ok && idx == 1 {
			once.Do(func() {
				close(openSeen)
				select { // a slow open-ok
				case <-release:
				case <-ctx.Done():
				}
			})
		}
		return false, nil
	})
	ctx := t.Context()
	cfg := recoveringConfig(b, amqp.RecoveryConfig{})
	cfg.ChannelMax = 1
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c1"})
	require.NoError(t, err)

	b.conn(t, 0).Drop()
	<-openSeen // the recovery has reopened channel 1 on the new connection
	closed := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		closed <- ch.Close(cctx)
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	require.NoError(t, <-closed)
	require.True(t, eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }), "events:\n%s", events)

	ch2, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.Equal(t, uint16(1), ch2.ID())
	require.True(t, eventually(2*time.Second, func() bool {
		n := 0
		for _, m := range b.methodsOf(1) {
			if m == "1 channel.open" {
				n++
			}
		}
		return n == 2
	}))
	// The server must have been told that the first channel 1 is closed
	// before it sees channel 1 opened again.
	var opens, closes int
	for _, m := range b.methodsOf(1) {
		switch m {
		case "1 channel.open":
			opens++
			require.Equal(t, opens-1, closes, "channel.open on a channel the server still has open; server saw %v", b.methodsOf(1))
		case "1 channel.close":
			closes++
		}
	}
}

// BUG 5 (tx.go checkTxLostLocked, doc of ErrTransactionLost): after a
// recovery lost a transaction's work, work done on the new link before the
// next TxCommit stays in the server's open transaction when that commit
// fails with ErrTransactionLost (nothing is sent, no tx.rollback). The
// documentation promises "the next transaction starts empty"; in fact the
// next successful TxCommit commits that work too, so an application that
// redoes its transaction after ErrTransactionLost publishes its message twice.
func TestTransactionLostDiscardsWorkDoneAfterRecovery(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.TxSelect(ctx))

	// The application's transaction: publish, then commit.
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("A")})
	require.NoError(t, err)
	require.True(t, eventually(5*time.Second, func() bool { return len(b.methodsOf(0)) >= 3 }))
	b.conn(t, 0).Drop()
	require.True(t, eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }))

	// The same transaction goes on after the recovery: another publish, then the commit.
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("B")})
	require.NoError(t, err)
	require.ErrorIs(t, ch.TxCommit(ctx), amqp.ErrTransactionLost)

	// "The next transaction starts empty": the application redoes its transaction.
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("A")})
	require.NoError(t, err)
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("B")})
	require.NoError(t, err)
	require.NoError(t, ch.TxCommit(ctx))

	// What the server committed: the publishes since the last commit or rollback.
	var open, committed []string
	for _, m := range b.methodsOf(1) {
		switch {
		case strings.Contains(m, "basic.publish"):
			open = append(open, m)
		case strings.HasSuffix(m, "tx.rollback"):
			open = nil
		case strings.HasSuffix(m, "tx.commit"):
			committed = append(committed, open...)
			open = nil
		}
	}
	require.Equal(t, []string{"1 basic.publish q A", "1 basic.publish q B"}, committed,
		"the commit after ErrTransactionLost also committed the lost transaction's post-recovery work; server saw %v", b.methodsOf(1))
}

// BUG 6 (channel_recovery.go republishKept + detach): when the new link
// dies in the middle of republishKept, the publishes already sent again
// are back in the confirm tracker and the rest are still in ch.republish;
// detach then appends the tracker's (earlier) ones AFTER the unsent
// (later) ones, so the next recovery republishes them out of order,
// against the documented "in their original order".
func TestRepublishKeepsOrderWhenTheLinkDiesMidRepublish(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	var dials atomic.Int32
	cfg := recoveringConfig(b, amqp.RecoveryConfig{Republish: true})
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := b.srv.Dial(ctx, network, addr)
		if err != nil || dials.Add(1) != 2 {
			return c, err
		}
		// The first reconnection's socket breaks after 4 MiB have been written.
		return &breakingConn{Conn: c, budget: 4 << 20}, nil
	}
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	b.holdAcks.Store(true)
	const size = 3 << 20
	var confs []*amqp.Confirmation
	for i := range 4 {
		body := []byte(fmt.Sprintf("m%d", i) + strings.Repeat(".", size))
		conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: body})
		require.NoError(t, err)
		confs = append(confs, conf)
	}
	require.True(t, eventually(10*time.Second, func() bool { return len(b.methodsOf(0)) >= 6 }))
	b.holdAcks.Store(false)

	b.conn(t, 0).Drop()
	require.True(t, eventually(10*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }), "events:\n%s", events)
	for _, conf := range confs {
		require.NoError(t, conf.Wait(ctx))
	}
	var sent []string
	for _, m := range b.methodsOf(2) {
		if strings.Contains(m, "basic.publish") {
			sent = append(sent, m)
		}
	}
	t.Logf("republished on the third connection: %v", sent)
	// m0 may have been confirmed on the broken connection; the others were not.
	require.Contains(t, sent, "1 basic.publish q m3")
	require.True(t, slices.IsSorted(sent),
		"republished out of order after the first reconnection broke mid-republish: %v (that connection got %v)", sent, b.methodsOf(1))
}

// breakingConn fails every write once budget bytes have been written, as
// a socket whose peer vanished does.
type breakingConn struct {
	net.Conn
	mu     sync.Mutex
	budget int
}

func (c *breakingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if len(p) > c.budget {
		c.budget = 0
		c.mu.Unlock()
		c.Conn.Close()
		return 0, errors.New("write: broken pipe")
	}
	c.budget -= len(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// BUG 7 (channel_recovery.go detach/resubscribeAll): a consumer that has
// ended but is still in ch.consumers at the loss is subscribed again on
// the new connection. Here: a Consume whose caller gave up before
// consume-ok; the hook then sends basic.cancel, and the link dies before
// cancel-ok. detach snapshots ch.consumers (the consumer is still in it),
// then fails the cancel, whose callback ends the consumer — but nothing
// removes it from ch.consumers, and resubscribeAll sends basic.consume for
// it. The server then delivers to a consumer nobody can read: with manual
// acks those messages stay unacknowledged for the life of the connection.
func TestEndedConsumerIsNotResubscribedAfterRecovery(t *testing.T) {
	giveUp := make(chan struct{})
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		switch m := cmd.Method.(type) {
		case *amqp.BasicConsume:
			if idx == 0 && m.ConsumerTag == "zombie" {
				select { // a slow consume-ok: the caller gives up first
				case <-giveUp:
				case <-ctx.Done():
				}
				time.Sleep(50 * time.Millisecond)
			}
		case *amqp.BasicCancel:
			if idx == 0 && m.ConsumerTag == "zombie" {
				c.Drop() // the link dies before cancel-ok
				return true, nil
			}
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)

	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel(); close(giveUp) }()
	_, err = ch.Consume(cctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "zombie"})
	require.ErrorIs(t, err, context.Canceled)

	require.True(t, eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }), "events:\n%s", events)
	require.NotContains(t, b.methodsOf(1), "1 basic.consume q zombie",
		"the recovery subscribed again a consumer that had ended (its Consume gave up); server saw %v", b.methodsOf(1))
}

// BUG 8 (channel_recovery.go reattach + consumer backpressure): the
// recovery reattaches a channel consumer by consumer, waiting for each
// consume-ok on the reader, while the channel is still "recovering", so
// Ack/Nack/Reject on it wait for the recovery. A manual-ack consumer
// without prefetch (or with a prefetch above its BufferLimit) that is
// subscribed first gets its backlog pushed at once; its buffer fills, the
// reader pauses until the application takes deliveries; the application
// takes one and acknowledges it — and the Ack waits for the recovery,
// which waits for the next consumer's consume-ok, which the paused reader
// never reads. Without a bound on the Ack's ctx this never ends; the
// heartbeat monitor is suspended while the reader is paused, so nothing
// breaks the cycle. (Without recovery Ack never waits for the reader.)
func TestAckDuringReattachDoesNotDeadlockWithConsumerBackpressure(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.BasicConsume); ok && idx == 1 && m.ConsumerTag == "a" {
			// The queue's backlog follows the consume-ok at once.
			if err := c.Send(ctx, cmd.Channel, &amqp.BasicConsumeOk{ConsumerTag: "a"}); err != nil {
				return true, err
			}
			return true, c.Deliver(ctx, cmd.Channel, "a", 10, amqp.Properties{}, []byte("backlog"))
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	a, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "qa", ConsumerTag: "a"}, amqp.ConsumerOptions{BufferLimit: 2})
	require.NoError(t, err)
	_, err = ch.Consume(ctx, amqp.BasicConsume{Queue: "qb", ConsumerTag: "b"})
	require.NoError(t, err)

	// The application: take each delivery and acknowledge it.
	ackErr := make(chan error, 1)
	go func() {
		for {
			d, err := a.Next(ctx)
			if err != nil {
				return
			}
			err = d.Ack(amqp.AckOptions{}) // never waits, so it cannot join the cycle
			if err != nil {
				select {
				case ackErr <- err:
				default:
				}
				return
			}
		}
	}()

	b.conn(t, 0).Drop()
	ok := eventually(2*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 })
	select {
	case err := <-ackErr:
		t.Fatalf("Ack of a delivery from the new connection failed: %v (recovery succeeded: %t)", err, ok)
	default:
	}
	require.True(t, ok, "the recovery is stuck waiting for consume-ok behind a paused reader; events:\n%s", events)
}

// BUG 9 (topology_recovery.go restoreTopology: defer tmp.Close(context.WithoutCancel(ctx))):
// the topology is restored on a temporary channel that restore closes with
// a context that never ends. If the new link dies after that channel.close
// went out and before its close-ok, the close waits for a reply that
// cannot come: the call is failed only when the recovery retires the link,
// and the recovery is the goroutine stuck in the deferred Close. The
// recovery never goes on (and Close of the connection cannot end it: the
// stuck Close ignores the recovery's ctx).
func TestRecoveryGoesOnWhenTheLinkDiesDuringTopologyChannelClose(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.ChannelClose); ok && idx == 1 {
			c.Drop() // the node dies as the topology's channel is closed
			return true, nil
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "x", Type: "direct"}))

	b.conn(t, 0).Drop()
	if !eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }) {
		t.Fatalf("the recovery is stuck closing the topology channel of a dead link (connections made: %d, recovering: %t); events:\n%s",
			b.senderCount(), conn.Recovering(), events)
	}
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "y", Type: "direct"}))
}
