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

func TestChannelRecoveryReappliesState(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	ctx := t.Context()

	// qos and confirm mode, answered by the script.
	errc := make(chan error, 1)
	go func() {
		err := ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 42})
		if err == nil {
			err = ch.ConfirmSelect(ctx, amqp.ConfirmSelect{})
		}
		errc <- err
	}()
	id, _ := amqptest.Expect[*amqp.BasicQos](t, sc)
	require.NoError(t, sc.Send(ctx, id, &amqp.BasicQosOk{}))
	amqptest.Expect[*amqp.ConfirmSelect](t, sc)
	require.NoError(t, sc.Send(ctx, id, &amqp.ConfirmSelectOk{}))
	require.NoError(t, <-errc)

	// An outstanding publish, then a failing declare.
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	go func() {
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "missing", Passive: true})
		errc <- err
	}()
	_, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc)
	require.NoError(t, sc.CloseChannel(ctx, id, amqp.CodeNotFound, "NOT_FOUND - no queue 'missing'", qd))
	err = <-errc
	require.ErrorIs(t, err, amqp.ErrNotFound)
	var e *amqp.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "queue.declare", e.Method())
	require.ErrorIs(t, conf.Wait(ctx), amqp.ErrNotFound, "outstanding confirmations resolve with the channel's error, not as nacks")

	// The client reopened the same channel and re-applied qos and confirm mode, in order.
	id2, _ := amqptest.Expect[*amqp.ChannelOpen](t, sc)
	require.Equal(t, id, id2)
	_, qos := amqptest.Expect[*amqp.BasicQos](t, sc)
	require.Equal(t, uint16(42), qos.PrefetchCount)
	amqptest.Expect[*amqp.ConfirmSelect](t, sc)
	// A call made meanwhile is queued behind the reopen.
	go func() {
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "again"})
		errc <- err
	}()
	_, again := amqptest.Expect[*amqp.QueueDeclare](t, sc)
	require.Equal(t, "again", again.Queue)
	require.NoError(t, sc.Send(ctx, id, &amqp.ChannelOpenOk{}))
	require.NoError(t, sc.Send(ctx, id, &amqp.BasicQosOk{}))
	require.NoError(t, sc.Send(ctx, id, &amqp.ConfirmSelectOk{}))
	require.NoError(t, sc.Send(ctx, id, &amqp.QueueDeclareOk{Queue: "again"}))
	require.NoError(t, <-errc)

	conf, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.NoError(t, err)
	require.Equal(t, uint64(1), conf.DeliveryTag(), "sequence numbers restart after the reopen")
	amqptest.ExpectPublish(t, sc)
	require.NoError(t, sc.Send(ctx, id, &amqp.BasicAck{DeliveryTag: 1}))
	require.NoError(t, conf.Wait(ctx))
}

func TestReopenFailureEndsChannel(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	ctx := t.Context()
	errc := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "x", Passive: true})
		errc <- err
	}()
	id, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc)
	require.NoError(t, sc.CloseChannel(ctx, id, amqp.CodeNotFound, "NOT_FOUND", qd))
	require.ErrorIs(t, <-errc, amqp.ErrNotFound)
	_, open := amqptest.Expect[*amqp.ChannelOpen](t, sc)
	require.NoError(t, sc.CloseChannel(ctx, id, amqp.CodeAccessRefused, "ACCESS_REFUSED", open))
	<-ch.Done()
	require.ErrorIs(t, ch.Err(), amqp.ErrClosed)
	require.ErrorIs(t, ch.Err(), amqp.ErrAccessRefused)
	require.NoError(t, conn.Err(), "the connection is unharmed")
}

// Regression tests from a review of connection recovery: each failed because
// of the bug its comment describes; all are fixed.

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

// Regression tests from a review of the merge of recovery with the
// performance work; the bug they describe is fixed.

// BUG (channel_recovery.go republishKept, with serverClosed's chRecovering
// branch in channel.go): with Republish, when the server closes the channel
// while the recovery is republishing the kept publishes (a republished
// message to an exchange that no longer exists: 404), serverClosed moves
// the already republished ones back to ch.republish and leaves confirm mode
// (confirms.failAll). republishKept then goes on sending the rest on the
// channel the server closed, and since confirm mode is off it resolves each
// of their Confirmations as ACKED (conf.resolve(nil, nil): "finish has run
// or will", which is not the case here). The channel is then reopened, but
// those messages are gone: the application was told the broker confirmed
// messages that the broker discarded. (Against RabbitMQ, the publishes after
// close-ok on a closed channel would also close the connection with 504.)
func TestRepublishInterruptedByServerCloseAcksOnlyWhatTheServerConfirmed(t *testing.T) {
	confs, serverAcked, _ := republishThroughServerClose(t, false)
	var falseAcks []string
	for i, conf := range confs {
		select {
		case <-conf.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("confirmation %d never resolved", i)
		}
		if conf.Acked() && !serverAcked(i) {
			falseAcks = append(falseAcks, fmt.Sprintf("msg-%02d", i))
		}
	}
	require.Empty(t, falseAcks,
		"Confirmations resolved as acked although the server discarded these messages and never confirmed them")
}

// BUG (same place, second symptom): the Confirmations republishKept resolves
// in that branch are resolved without signalConfirmProgressLocked, so a
// Confirmation.Wait that was already waiting is never woken: it blocks until
// its ctx ends although Done() is closed and Acked() reports true.
func TestRepublishInterruptedByServerCloseWakesWaitingWaits(t *testing.T) {
	confs, _, waited := republishThroughServerClose(t, true)
	for i, conf := range confs {
		select {
		case <-conf.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("confirmation %d never resolved", i)
		}
		select {
		case <-waited[i]:
		case <-time.After(2 * time.Second):
			t.Fatalf("a Wait of confirmation %d that began before the connection loss has not returned 2s after Done() closed (Acked=%t)", i, conf.Acked())
		}
	}
}

// republishThroughServerClose publishes n unconfirmed messages in confirm
// mode with Republish, drops the connection, and on the recovered connection
// closes the channel (404) at the first republished message while holding
// back reading, so the channel.close is handled while the recovery is still
// republishing. With waiting, a goroutine per Confirmation is already in
// Wait before the connection drops. It returns the Confirmations and whether
// the server acked message i on an open confirm-mode channel.
func republishThroughServerClose(t *testing.T, waiting bool) ([]*amqp.Confirmation, func(i int) bool, []chan struct{}) {
	const n = 32
	body := func(i int) []byte {
		return []byte(fmt.Sprintf("msg-%02d%s", i, strings.Repeat(".", 256<<10)))
	}
	var (
		mu        sync.Mutex
		sentClose bool
		closed    bool                // the server considers channel 1 closed
		acked     = map[string]bool{} // bodies the server confirmed on conn 1
	)
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if idx != 1 {
			return false, nil
		}
		mu.Lock()
		defer mu.Unlock()
		switch cmd.Method.(type) {
		case *amqp.BasicPublish:
			if !sentClose {
				// The first republished message goes to an exchange that is
				// gone: close the channel, and be slow to read on, so that
				// the client's republishing waits for room meanwhile.
				sentClose, closed = true, true
				err := c.Send(ctx, cmd.Channel, &amqp.ChannelClose{ReplyCode: amqp.CodeNotFound,
					ReplyText: "NOT_FOUND - no exchange 'gone'", FailingClassID: 60, FailingMethodID: 40})
				mu.Unlock()
				time.Sleep(500 * time.Millisecond)
				mu.Lock()
				return true, err
			}
			if closed {
				return true, nil // discarded: the channel is closed
			}
			if cmd.ConfirmTag != 0 {
				acked[string(cmd.Body[:6])] = true
			}
			return false, nil // AutoReply acks it
		case *amqp.ChannelCloseOk:
			return true, nil
		case *amqp.ChannelOpen:
			closed = false
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{Republish: true}))
	require.NoError(t, err)
	closeConn(t, conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))

	b.holdAcks.Store(true)
	confs := make([]*amqp.Confirmation, n)
	waited := make([]chan struct{}, n)
	for i := range n {
		confs[i], err = ch.Publish(ctx, amqp.Publishing{Exchange: "gone", RoutingKey: "k", Body: body(i)})
		require.NoError(t, err)
		if waiting {
			conf, w := confs[i], make(chan struct{})
			waited[i] = w
			go func() {
				defer close(w)
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				_ = conf.Wait(wctx)
			}()
		}
	}
	require.True(t, eventually(10*time.Second, func() bool {
		pubs := 0
		for _, m := range b.methodsOf(0) {
			if strings.Contains(m, "basic.publish") {
				pubs++
			}
		}
		return pubs == n
	}), "the first connection did not receive every publish")
	b.holdAcks.Store(false)
	b.conn(t, 0).Drop()
	return confs, func(i int) bool {
		mu.Lock()
		defer mu.Unlock()
		return acked[fmt.Sprintf("msg-%02d", i)]
	}, waited
}
