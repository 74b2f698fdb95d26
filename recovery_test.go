package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Frame-level tests of connection recovery against the fake server. The
// fault suite against real brokers is in brokertest.

// TestRecoveryRestoresEverything drops the connection and checks that the
// new one carries the same topology, channel modes and consumers, in order,
// with the server-named queue renamed, and that the same handles work.
func TestRecoveryRestoresEverything(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})

	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 10}))
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "src", Type: "fanout"}))
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "dst", Type: "direct"}))
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "gone", Type: "direct"}))
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "src", Passive: true}))
	require.NoError(t, ch.ExchangeBind(ctx, amqp.ExchangeBind{Destination: "dst", Source: "src", RoutingKey: "k"}))
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(ctx, amqp.QueueBind{Queue: q.Queue, Exchange: "dst", RoutingKey: "k"}))
	require.NoError(t, ch.QueueBind(ctx, amqp.QueueBind{Queue: q.Queue, Exchange: "gone", RoutingKey: "x"}))
	require.NoError(t, ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: "gone"})) // forgotten, with its binding
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "durable-jobs", Durable: true})
	require.NoError(t, err)
	// Deleted or unbound entities are forgotten.
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "deleted"})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(ctx, amqp.QueueBind{Queue: "deleted", Exchange: "dst", RoutingKey: "k"}))
	_, err = ch.QueueDelete(ctx, amqp.QueueDelete{Queue: "deleted"})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(ctx, amqp.QueueBind{Queue: "durable-jobs", Exchange: "src", RoutingKey: "u"}))
	require.NoError(t, ch.QueueUnbind(ctx, amqp.QueueUnbind{Queue: "durable-jobs", Exchange: "src", RoutingKey: "u"}))
	require.NoError(t, ch.ExchangeBind(ctx, amqp.ExchangeBind{Destination: "src", Source: "dst", RoutingKey: "loop"}))
	require.NoError(t, ch.ExchangeUnbind(ctx, amqp.ExchangeUnbind{Destination: "src", Source: "dst", RoutingKey: "loop"}))
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, ConsumerTag: "c1"})
	require.NoError(t, err)

	first := b.conn(t, 0)
	first.Drop()
	require.Equal(t, amqp.RecoveryStarted, events.wait(t, amqp.RecoveryStarted).Kind)
	events.wait(t, amqp.RecoverySucceeded)
	renamed := events.wait(t, amqp.RecoveryQueueRenamed)
	require.Equal(t, q.Queue, renamed.OldName)
	require.NotEqual(t, q.Queue, renamed.NewName)
	newQ := renamed.NewName

	second := b.conn(t, 1)
	tmp := "2" // the recovery's own channel: the next free number
	require.Equal(t, []string{
		tmp + " channel.open",
		tmp + " exchange.declare src",
		tmp + " exchange.declare dst",
		tmp + ` queue.declare "" exclusive=true`,
		tmp + ` queue.declare "durable-jobs" exclusive=false`,
		tmp + " exchange.bind src->dst k",
		tmp + " queue.bind dst->" + newQ + " k",
		tmp + " channel.close",
		"1 channel.open",
		"1 basic.qos 10 global=false",
		"1 confirm.select",
		"1 basic.consume " + newQ + " c1",
	}, b.methods(second))

	// The same handles work on the new connection.
	require.True(t, conn.IsAlive())
	require.NoError(t, second.Deliver(ctx, 1, "c1", 1, amqp.Properties{}, []byte("after")))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "after", string(d.Body))
	require.NoError(t, d.Ack(amqp.AckOptions{}))
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: newQ, Body: []byte("p")})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(ctx))
	require.Equal(t, uint64(1), conf.DeliveryTag(), "sequence numbers start again on the new channel")
}

// TestRecoveryInFlightWork checks what each handle reports for work that
// was in flight when the connection dropped: a delivery from before can no
// longer be acked, an unconfirmed publish is lost (or, with Republish, sent
// again), and a call made while disconnected waits and then succeeds.
func TestRecoveryInFlightWork(t *testing.T) {
	for _, republish := range []bool{false, true} {
		t.Run(fmt.Sprintf("republish=%t", republish), func(t *testing.T) {
			b := newRecordingBroker(t, amqptest.Options{}, nil)
			ctx := t.Context()
			// Hold reconnection until the test has made its calls.
			var allow atomic.Bool
			allow.Store(true)
			reconnected := make(chan struct{})
			cfg := recoveringConfig(b, amqp.RecoveryConfig{Republish: republish})
			cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if !allow.Load() {
					<-reconnected
				}
				return b.srv.Dial(ctx, network, addr)
			}
			conn, err := amqp.DialConfig(ctx, cfg)
			require.NoError(t, err)
			closeConn(t, conn)
			events := watchRecovery(conn)
			ch, err := conn.Channel(ctx)
			require.NoError(t, err)
			require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
			cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c1"})
			require.NoError(t, err)
			first := b.conn(t, 0)
			require.NoError(t, first.Deliver(ctx, 1, "c1", 1, amqp.Properties{}, []byte("before")))
			d, err := cons.Next(ctx)
			require.NoError(t, err)

			b.holdAcks.Store(true)
			var pending []*amqp.Confirmation
			for i := range 3 {
				conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: fmt.Appendf(nil, "m%d", i)})
				require.NoError(t, err)
				pending = append(pending, conf)
			}
			require.Eventually(t, func() bool { return len(b.methods(first)) >= 6 }, 5*time.Second, time.Millisecond)

			allow.Store(false)
			first.Drop()
			events.wait(t, amqp.RecoveryStarted)
			require.Eventually(t, conn.Recovering, 5*time.Second, time.Millisecond)
			require.False(t, conn.IsAlive())

			// A call made now waits for the recovery.
			declared := make(chan error, 1)
			go func() {
				_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "later"})
				declared <- err
			}()
			if !republish {
				for _, conf := range pending {
					err := conf.Wait(ctx)
					require.ErrorIs(t, err, amqp.ErrPublishLost)
					require.ErrorIs(t, err, amqp.ErrConnectionLost)
				}
			}
			require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrStaleDelivery)
			select {
			case err := <-declared:
				t.Fatalf("queue.declare returned during the recovery: %v", err)
			case <-time.After(50 * time.Millisecond):
			}

			b.holdAcks.Store(false)
			close(reconnected)
			events.wait(t, amqp.RecoverySucceeded)
			require.NoError(t, <-declared)
			if republish {
				for i, conf := range pending {
					require.NoError(t, conf.Wait(ctx), "message %d", i)
					require.Equal(t, uint64(i+1), conf.DeliveryTag())
				}
				var sent []string
				for _, m := range b.methods(b.conn(t, 1)) {
					if strings.Contains(m, "basic.publish") {
						sent = append(sent, m)
					}
				}
				require.Equal(t, []string{"1 basic.publish q m0", "1 basic.publish q m1", "1 basic.publish q m2"}, sent)
			}
		})
	}
}

// TestRecoveryFailFast checks that calls fail at once while recovering
// with FailFast, and that Close during a recovery stops it.
func TestRecoveryFailFast(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	var dials atomic.Int32
	cfg := recoveringConfig(b, amqp.RecoveryConfig{FailFast: true, MinBackoff: 20 * time.Millisecond})
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) > 1 {
			return nil, errors.New("node down")
		}
		return b.srv.Dial(ctx, network, addr)
	}
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	b.conn(t, 0).Drop()
	failed := events.wait(t, amqp.RecoveryAttemptFailed)
	require.ErrorContains(t, failed.Err, "node down")

	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.ErrorIs(t, err, amqp.ErrRecovering)
	require.True(t, amqp.Recoverable(err))
	_, err = conn.Channel(ctx)
	require.ErrorIs(t, err, amqp.ErrRecovering)

	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, conn.Close(closeCtx))
	require.ErrorIs(t, conn.Err(), amqp.ErrClosed)
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.ErrorIs(t, err, amqp.ErrClosed)
}

// TestRecoveryGivesUp checks MaxAttempts and fatal errors: the connection
// ends with the error and OnRecovery is told.
func TestRecoveryGivesUp(t *testing.T) {
	t.Run("max attempts", func(t *testing.T) {
		b := newRecordingBroker(t, amqptest.Options{}, nil)
		var dials atomic.Int32
		cfg := recoveringConfig(b, amqp.RecoveryConfig{MaxAttempts: 3})
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) > 1 {
				return nil, errors.New("node down")
			}
			return b.srv.Dial(ctx, network, addr)
		}
		conn, err := amqp.DialConfig(t.Context(), cfg)
		require.NoError(t, err)
		events := watchRecovery(conn)
		b.conn(t, 0).Drop()
		<-conn.Done()
		require.ErrorContains(t, conn.Err(), "gave up after 3 attempts")
		require.Equal(t, int32(4), dials.Load())
		require.Equal(t, 3, events.wait(t, amqp.RecoveryFailed).Attempt)
	})
	t.Run("vhost refused", func(t *testing.T) {
		var refuse atomic.Bool
		b := newRecordingBroker(t, amqptest.Options{CheckVhost: func(string) error {
			if refuse.Load() {
				return errors.New("vhost deleted")
			}
			return nil
		}}, nil)
		conn, err := amqp.DialConfig(t.Context(), recoveringConfig(b, amqp.RecoveryConfig{}))
		require.NoError(t, err)
		events := watchRecovery(conn)
		refuse.Store(true)
		b.conn(t, 0).Drop()
		<-conn.Done()
		require.ErrorIs(t, conn.Err(), amqp.ErrNotAllowed)
		require.ErrorIs(t, events.wait(t, amqp.RecoveryFailed).Err, amqp.ErrNotAllowed)
	})
	t.Run("protocol error the server reports is not recovered", func(t *testing.T) {
		b := newRecordingBroker(t, amqptest.Options{}, nil)
		conn, err := amqp.DialConfig(t.Context(), recoveringConfig(b, amqp.RecoveryConfig{}))
		require.NoError(t, err)
		// (With a Handler serving the connection, CloseConnection cannot
		// read the close-ok itself; the client's reaction is what counts.)
		_ = b.conn(t, 0).CloseConnection(t.Context(), amqp.CodeFrameError, "bad frame", nil)
		<-conn.Done()
		require.ErrorIs(t, conn.Err(), amqp.ErrFrameError)
	})
	t.Run("forced close is recovered", func(t *testing.T) {
		b := newRecordingBroker(t, amqptest.Options{}, nil)
		conn, err := amqp.DialConfig(t.Context(), recoveringConfig(b, amqp.RecoveryConfig{}))
		require.NoError(t, err)
		closeConn(t, conn)
		events := watchRecovery(conn)
		_ = b.conn(t, 0).CloseConnection(t.Context(), amqp.CodeConnectionForced, "closed via management plugin", nil)
		require.ErrorIs(t, events.wait(t, amqp.RecoveryStarted).Err, amqp.ErrConnectionForced)
		events.wait(t, amqp.RecoverySucceeded)
		require.Nil(t, conn.Err())
	})
}

// TestRecoveryEntityFailure checks that a consumer whose queue is gone on
// the new connection ends with the error, is reported, and does not stop
// the other consumers of its channel from being recovered.
func TestRecoveryEntityFailure(t *testing.T) {
	var second atomic.Bool
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, _ int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.BasicConsume); ok && second.Load() && m.Queue == "gone" {
			return true, c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue 'gone'", m)
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	gone, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "gone", ConsumerTag: "a"})
	require.NoError(t, err)
	kept, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "kept", ConsumerTag: "b"})
	require.NoError(t, err)

	second.Store(true)
	b.conn(t, 0).Drop()
	failed := events.wait(t, amqp.RecoveryEntityFailed)
	require.Contains(t, failed.Entity, `consumer "a"`)
	require.ErrorIs(t, failed.Err, amqp.ErrNotFound)
	events.wait(t, amqp.RecoverySucceeded)
	<-gone.Done()
	require.ErrorIs(t, gone.Err(), amqp.ErrNotFound)
	require.Nil(t, kept.Err())
	require.NoError(t, b.conn(t, 1).Deliver(ctx, 1, "b", 1, amqp.Properties{}, []byte("still here")))
	d, err := kept.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "still here", string(d.Body))
}

// TestRecoveryLogsInWithUpdatedSecret checks that a recovery after
// UpdateSecret logs in with the new secret, not Config's expired one.
func TestRecoveryLogsInWithUpdatedSecret(t *testing.T) {
	t.Run("PlainAuth value", func(t *testing.T) {
		testRecoveryUpdatedSecret(t, func(cfg *amqp.Config) { cfg.Username, cfg.Password = "app", "token-1" })
	})
	t.Run("*PlainAuth", func(t *testing.T) {
		testRecoveryUpdatedSecret(t, func(cfg *amqp.Config) {
			cfg.SASL = []amqp.Mechanism{&amqp.PlainAuth{Username: "app", Password: "token-1"}}
		})
	})
}

func testRecoveryUpdatedSecret(t *testing.T, setCredentials func(*amqp.Config)) {
	var mu sync.Mutex
	var passwords []string
	b := newRecordingBroker(t, amqptest.Options{CheckAuth: func(mechanism, response string) error {
		_, pw, err := amqptest.Credentials(mechanism, response)
		mu.Lock()
		passwords = append(passwords, pw)
		mu.Unlock()
		return err
	}}, nil)
	ctx := t.Context()
	cfg := recoveringConfig(b, amqp.RecoveryConfig{})
	setCredentials(&cfg)
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	require.NoError(t, conn.UpdateSecret(ctx, "token-2", "refresh"))
	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"token-1", "token-2"}, passwords)
}

// Regression tests from a review of connection recovery: each failed because
// of the bug its comment describes; all are fixed.

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

// Frame-level tests of recovery after a protocol error: this client closed
// the connection because the server sent something it could not parse.

// badFrameEnd is a heartbeat frame whose frame-end octet is wrong: the
// stream cannot be trusted past it.
var badFrameEnd = []byte{8, 0, 0, 0, 0, 0, 0, 0xAB}

// poisonAfterConsume answers basic.consume and then breaks the framing, on
// the connections for which poison(idx) holds.
func poisonAfterConsume(poison func(idx int) bool) interceptFunc {
	return func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		m, ok := cmd.Method.(*amqp.BasicConsume)
		if !ok || !poison(idx) {
			return false, nil
		}
		if err := c.Send(ctx, cmd.Channel, &amqp.BasicConsumeOk{ConsumerTag: m.ConsumerTag}); err != nil {
			return true, err
		}
		return true, c.WriteRaw(ctx, badFrameEnd)
	}
}

func TestRecoveryAfterProtocolError(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, poisonAfterConsume(func(idx int) bool { return idx == 0 }))
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"})
	require.NoError(t, err)

	started := events.wait(t, amqp.RecoveryStarted)
	require.ErrorIs(t, started.Err, amqp.ErrMalformedFrame, "the event names the cause")
	require.ErrorContains(t, started.Err, "sent connection.close 502")
	events.wait(t, amqp.RecoverySucceeded)
	require.True(t, conn.IsAlive())

	second := b.conn(t, 1)
	require.NoError(t, second.Deliver(ctx, 1, "c", 1, amqp.Properties{}, []byte("after")))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "after", string(d.Body), "the same consumer goes on after the recovery")
}

func TestRecoveryGivesUpOnARepeatedProtocolError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		repeats int
		losses  int // connections the protocol error ends before the connection does
	}{
		{"default", 0, 1 + amqp.DefaultProtocolErrorRepeats},
		{"one", 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newRecordingBroker(t, amqptest.Options{}, poisonAfterConsume(func(int) bool { return true }))
			ctx := t.Context()
			conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{ProtocolErrorRepeats: tc.repeats}))
			require.NoError(t, err)
			events := watchRecovery(conn)
			ch, err := conn.Channel(ctx)
			require.NoError(t, err)
			_, err = ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"})
			require.NoError(t, err)

			failed := events.wait(t, amqp.RecoveryFailed)
			require.ErrorIs(t, failed.Err, amqp.ErrMalformedFrame)
			require.ErrorContains(t, failed.Err, "same protocol error")
			select {
			case <-conn.Done():
			case <-ctx.Done():
				t.Fatal("the connection did not end")
			}
			require.ErrorIs(t, conn.Err(), amqp.ErrMalformedFrame, "the connection ends with the error itself")
			require.Equal(t, tc.losses, b.senderCount(), "connections dialled")
		})
	}
}

// A protocol error that does not repeat at once, or another loss between
// two of them, does not count towards the limit.
func TestRecoveryProtocolErrorStreakResets(t *testing.T) {
	// Connections 0 and 1 poison, 2 is dropped by hand, 3 and 4 poison, 5 is healthy.
	b := newRecordingBroker(t, amqptest.Options{}, poisonAfterConsume(func(idx int) bool { return idx != 2 && idx < 5 }))
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{ProtocolErrorRepeats: 2})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"})
	require.NoError(t, err)

	// Connection 2 is healthy: drop it by hand once it is restored.
	third := b.conn(t, 2)
	for b.senderCount() < 3 || len(b.methodsOf(2)) < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("no third connection")
		case <-time.After(time.Millisecond):
		}
	}
	third.Drop()
	// Connections 3 and 4 poison again; the streak started afresh, so the
	// limit of 2 repeats is not reached (3 would be), and 5 is healthy.
	for b.senderCount() < 6 {
		select {
		case <-ctx.Done():
			t.Fatalf("recovery stopped early: %v", events)
		case <-time.After(time.Millisecond):
		}
	}
	sixth := b.conn(t, 5)
	for len(b.methodsOf(5)) < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("the sixth connection was not restored")
		case <-time.After(time.Millisecond):
		}
	}
	require.NoError(t, sixth.Deliver(ctx, 1, "c", 1, amqp.Properties{}, []byte("at last")))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "at last", string(d.Body))
	// The delivery can come while the restore still finishes.
	require.Eventually(t, conn.IsAlive, waitBudget(t), time.Millisecond)
	require.Zero(t, events.count(amqp.RecoveryFailed), "%v", events)
}

// A node that accepts the TCP connection and then says nothing, as one
// behind a partition can, holds a reconnection attempt back by
// AttemptTimeout, not by ConnectionTimeout.
func TestRecoveryAttemptTimeoutBoundsASilentNode(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	cfg := recoveringConfig(b, amqp.RecoveryConfig{AttemptTimeout: 2 * time.Second})
	cfg.ConnectionTimeout = time.Hour // a test deadline away: only AttemptTimeout can end the silent try
	cfg.Addrs = []string{"good:5672", "silent:5672"}
	silent := make(chan net.Conn, 8)
	t.Cleanup(func() {
		close(silent)
		for c := range silent {
			c.Close()
		}
	})
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "silent:5672" {
			client, server := net.Pipe()
			silent <- server // never read or written: the handshake hangs
			return client, nil
		}
		return b.srv.Dial(ctx, network, addr)
	}
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)

	b.conn(t, 0).Drop() // recovery tries the next address first: the silent one
	ok := events.wait(t, amqp.RecoverySucceeded)
	require.Equal(t, "good:5672", ok.Addr)
	require.Equal(t, 1, ok.Attempt, "the silent node did not cost the attempt")
	require.Len(t, silent, 1, "the silent node was tried first")
}

// A call in flight when the client closes the connection over a protocol
// error fails with an error that Recoverable calls temporary: the
// connection is being recovered, and the same call succeeds on it.
func TestCallLostToAProtocolErrorIsRecoverable(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.QueueDeclare); ok && idx == 0 {
			return true, c.WriteRaw(ctx, badFrameEnd) // instead of declare-ok
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "q"})
	require.ErrorIs(t, err, amqp.ErrClosed)
	require.ErrorIs(t, err, amqp.ErrMalformedFrame)
	require.True(t, amqp.Recoverable(err), "%v", err)
	events.wait(t, amqp.RecoverySucceeded)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "q"})
	require.NoError(t, err, "the retry succeeds on the recovered connection")
}
