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

// TestResubscribeAfterServerCancel checks ConsumerOptions.Resubscribe: a
// consumer the server cancels subscribes again once its queue exists.
func TestResubscribeAfterServerCancel(t *testing.T) {
	var queueGone atomic.Bool
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, _ int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.QueueDeclare); ok && m.Passive && queueGone.Load() {
			return true, c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue", m)
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, amqp.Config{Dial: b.srv.Dial, Recovery: &amqp.RecoveryConfig{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cancelled := make(chan string, 1)
	cons, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"},
		amqp.ConsumerOptions{Resubscribe: true, OnCancel: func(tag string) { cancelled <- tag }})
	require.NoError(t, err)

	queueGone.Store(true)
	sc := b.conn(t, 0)
	require.NoError(t, sc.Send(ctx, 1, &amqp.BasicCancel{ConsumerTag: "c", NoWait: true}))
	require.Equal(t, "c", <-cancelled)
	failed := events.wait(t, amqp.RecoveryEntityFailed)
	require.ErrorIs(t, failed.Err, amqp.ErrNotFound)
	require.Nil(t, cons.Err(), "the consumer waits for its queue")

	queueGone.Store(false)
	events.wait(t, amqp.RecoveryConsumerResubscribed)
	require.NoError(t, sc.Deliver(ctx, 1, "c", 1, amqp.Properties{}, []byte("back")))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "back", string(d.Body))
	require.NoError(t, cons.Cancel(ctx))
}

// TestRecoveryLosesTransaction checks that tx mode is re-applied and that a
// transaction with uncommitted work at the drop cannot be committed as if
// nothing had happened.
func TestRecoveryLosesTransaction(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.TxSelect(ctx))
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("uncommitted")})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(b.methods(b.conn(t, 0))) >= 3 }, 5*time.Second, time.Millisecond)
	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	require.Equal(t, []string{"1 channel.open", "1 tx.select"}, b.methods(b.conn(t, 1)))
	require.ErrorIs(t, ch.TxCommit(ctx), amqp.ErrTransactionLost)
	require.Eventually(t, func() bool { return len(b.methods(b.conn(t, 1))) == 3 }, 5*time.Second, time.Millisecond)
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("again")})
	require.NoError(t, err)
	require.NoError(t, ch.TxCommit(ctx))
	// The commit that reported the loss rolled back, so "again" is the
	// whole of the transaction that commits.
	require.Equal(t, []string{"1 channel.open", "1 tx.select", "1 tx.rollback", "1 basic.publish q again", "1 tx.commit"}, b.methods(b.conn(t, 1)))
}

// TestRecoveryForgetsCancelledAutoDeleteQueue checks that an auto-delete
// queue whose last consumer was cancelled (so the broker deleted it) is not
// declared again, while one that still has a consumer is.
func TestRecoveryForgetsCancelledAutoDeleteQueue(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	for _, q := range []string{"ad-cancelled", "ad-kept"} {
		_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, AutoDelete: true})
		require.NoError(t, err)
	}
	cancelled, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "ad-cancelled", ConsumerTag: "x"})
	require.NoError(t, err)
	_, err = ch.Consume(ctx, amqp.BasicConsume{Queue: "ad-kept", ConsumerTag: "y"})
	require.NoError(t, err)
	require.NoError(t, cancelled.Cancel(ctx))

	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	require.Equal(t, []string{
		`2 channel.open`,
		`2 queue.declare "ad-kept" exclusive=false`,
		`2 channel.close`,
		`1 channel.open`,
		`1 basic.consume ad-kept y`,
	}, b.methods(b.conn(t, 1)))
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

// TestResubscribingConsumerEndsWithClose checks that a consumer waiting to
// resubscribe (unregistered from its channel) still ends when the
// connection is closed.
func TestResubscribingConsumerEndsWithClose(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, _ int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.QueueDeclare); ok && m.Passive {
			return true, c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue", m)
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	require.NoError(t, err)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cons, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"}, amqp.ConsumerOptions{Resubscribe: true})
	require.NoError(t, err)
	require.NoError(t, b.conn(t, 0).Send(ctx, 1, &amqp.BasicCancel{ConsumerTag: "c", NoWait: true}))
	events.wait(t, amqp.RecoveryEntityFailed)

	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, conn.Close(closeCtx))
	select {
	case <-cons.Done():
		require.ErrorIs(t, cons.Err(), amqp.ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("the resubscribing consumer never ended after Close")
	}
}

// TestChannelErrorEndsTransactionBookkeeping checks that a transaction
// ended by a channel error leaves nothing behind that a later recovery
// would report as a lost transaction.
func TestChannelErrorEndsTransactionBookkeeping(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, _ int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.QueueDeclare); ok && m.Passive {
			return true, c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue", m)
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.TxSelect(ctx))
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("in tx")})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "missing", Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound) // the channel error that ends the transaction
	require.NoError(t, ch.TxSelect(ctx))      // a new, empty transaction on the reopened channel

	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	require.NoError(t, ch.TxCommit(ctx), "the empty transaction commits")
}
