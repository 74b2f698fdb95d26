package amqp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Fake-server tests of the lent socket (lead.go): a sole consumer's Next
// reads the socket itself once the reader has lent it.

// leadingConsumer returns a consumer on a fresh fake connection dialled with
// cfg that holds the lease: a first delivery went through the reader, which
// then lent the socket to the waiting Next. Its deliveries arrive on got,
// read by a goroutine that calls Next until it fails.
func leadingConsumer(t *testing.T, cfg amqp.Config, opt amqp.ConsumerOptions) (*amqp.Consumer, *amqptest.Conn, uint16, <-chan *amqp.Delivery) {
	t.Helper()
	cons, sc, id := fakeConsumerWith(t, cfg, opt)
	got := nextInto(t, cons)
	waitUntilNextWaits(t, cons)
	require.NoError(t, sc.Deliver(t.Context(), id, "c", 1, amqp.Properties{}, []byte("first")))
	d := gotDelivery(t, got)
	require.Equal(t, "first", string(d.Body))
	waitUntilLeading(t, cons)
	return cons, sc, id, got
}

// nextInto calls Next until it fails, sending each delivery on the channel
// it returns, which it closes at the end.
func nextInto(t *testing.T, cons *amqp.Consumer) <-chan *amqp.Delivery {
	got := make(chan *amqp.Delivery, 1024)
	go func() {
		defer close(got)
		for {
			d, err := cons.Next(t.Context())
			if err != nil {
				return
			}
			got <- d
		}
	}()
	return got
}

// nextOnce calls Next once on another goroutine; the delivery (nil if Next
// failed) comes on the channel returned.
func nextOnce(ctx context.Context, cons *amqp.Consumer) <-chan *amqp.Delivery {
	got := make(chan *amqp.Delivery, 1)
	go func() {
		d, _ := cons.Next(ctx)
		got <- d
	}()
	return got
}

// gotDelivery receives what nextOnce sends, failing the test if Next failed.
func gotDelivery(t *testing.T, got <-chan *amqp.Delivery) *amqp.Delivery {
	t.Helper()
	d, _ := recvWithin(t, got, "a delivery")
	require.NotNil(t, d, "Next failed")
	return d
}

// waitUntilLeading returns once a Next of c reads the socket itself.
func waitUntilLeading(t *testing.T, c *amqp.Consumer) {
	t.Helper()
	require.Eventually(t, c.LeadingForTest, waitBudget(t), time.Millisecond, "Next never took the socket")
}

// After the first delivery, the reader lends the socket to the waiting
// Next: the rounds that follow are read by Next itself, in order, with no
// wake-up handed to it at all.
func TestLentSocketNextReadsItself(t *testing.T) {
	cons, sc, id, got := leadingConsumer(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
	const rounds, n = 5, 40
	tag := uint64(1)
	for r := range rounds {
		waitUntilLeading(t, cons)
		before := cons.SignalsForTest()
		require.NoError(t, sc.Deliver(t.Context(), id, "c", n, amqp.Properties{}, []byte("m")))
		for range n {
			d, ok := recvWithin(t, got, "a delivery")
			require.True(t, ok, "Next failed")
			tag++
			require.Equal(t, tag, d.DeliveryTag, "in order")
		}
		require.Equal(t, before, cons.SignalsForTest(), "round %d: Next was woken, so it did not read for itself", r)
	}
	require.Positive(t, cons.Channel().Connection().LeadsForTest())
}

// With lending off, the same traffic goes through the reader goroutine and
// wakes Next each round: the counter that the test above holds still is a
// real one.
func TestLentSocketOffWakesNextEachRound(t *testing.T) {
	cons, sc, id := fakeConsumerWith(t, amqp.WithoutLending(amqp.Config{}), amqp.ConsumerOptions{})
	got := nextInto(t, cons)
	for r := range 3 {
		waitUntilNextWaits(t, cons)
		before := cons.SignalsForTest()
		require.NoError(t, sc.Deliver(t.Context(), id, "c", 10, amqp.Properties{}, []byte("m")))
		for range 10 {
			recvWithin(t, got, "a delivery")
		}
		require.Greater(t, cons.SignalsForTest(), before, "round %d", r)
		require.False(t, cons.LeadingForTest())
	}
	require.Zero(t, cons.Channel().Connection().LeadsForTest())
}

// A reply the leading Next reads is handed back to the reader goroutine,
// which completes the call waiting for it; the consumer goes on.
func TestLentSocketHandsARepliesBack(t *testing.T) {
	cons, sc, id, got := leadingConsumer(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
	declared := declareInBackground(t, cons.Channel(), sc)
	require.True(t, cons.LeadingForTest(), "Next reads the socket while the call waits")
	require.NoError(t, sc.Send(t.Context(), id, &amqp.QueueDeclareOk{Queue: "other"}))
	err, _ := recvWithin(t, declared, "the declare")
	require.NoError(t, err)
	// Handed back, not read past: the reader goroutine reads now, and Next
	// waits for it.
	require.Eventually(t, func() bool { return cons.WaitingForTest() == 1 && !cons.LeadingForTest() && !cons.LeasedForTest() },
		waitBudget(t), time.Millisecond)
	require.NoError(t, sc.Deliver(t.Context(), id, "c", 3, amqp.Properties{}, []byte("after")))
	for tag := uint64(2); tag <= 4; tag++ {
		d := gotDelivery(t, got)
		require.Equal(t, tag, d.DeliveryTag)
	}
}

// A leading Next whose ctx ends returns ctx's error, even with half a
// frame read; the next Next goes on with the rest of that frame. The large
// message's body frames are larger than the quiet connection's read buffer,
// and the cut falls inside one of them.
func TestLentSocketCtxEndsNextMidFrame(t *testing.T) {
	for _, size := range []int{5, 300 << 10} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			cons, sc, id := fakeConsumerWith(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
			leaseTo(t, cons, sc, id) // the first delivery goes through the reader and gets Next the lease

			body := bytes.Repeat([]byte("split"), size/5)
			frames, err := amqp.AppendMethodFrame(nil, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2})
			require.NoError(t, err)
			frames, err = amqp.AppendHeaderFrame(frames, id, 60, uint64(len(body)), &amqp.Properties{})
			require.NoError(t, err)
			frames = amqp.AppendBodyFrames(frames, id, body, sc.FrameMax())
			half := len(frames) - 4 // in the (last) body frame
			if size > 5 {
				half = len(frames) / 2 // in the middle body frame
			}

			ctx, cancel := context.WithCancel(t.Context())
			ended := make(chan error, 1)
			go func() {
				_, err := cons.Next(ctx)
				ended <- err
			}()
			waitUntilLeading(t, cons)
			require.NoError(t, sc.WriteRaw(t.Context(), frames[:half]))
			cancel()
			err, _ = recvWithin(t, ended, "Next's end")
			require.ErrorIs(t, err, context.Canceled)
			require.False(t, cons.LeadingForTest())

			require.NoError(t, sc.WriteRaw(t.Context(), frames[half:]))
			d, err := cons.Next(t.Context())
			require.NoError(t, err)
			require.Equal(t, uint64(2), d.DeliveryTag)
			require.Equal(t, body, d.Body)
		})
	}
}

// A consumer that ends while its Next reads the socket ends that Next, with
// no frame from the server to wake it: here a Close whose ctx ended before
// the server's close-ok.
func TestLentSocketConsumerEndEndsLeadingNext(t *testing.T) {
	cons, sc, _, got := leadingConsumer(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	closed := make(chan error, 1)
	go func() { closed <- cons.Channel().Close(ctx) }()
	amqptest.Expect[*amqp.ChannelClose](t, sc)
	cancel() // no close-ok: the channel ends on our side alone
	err, _ := recvWithin(t, closed, "Close")
	require.Error(t, err)
	_, ok := recvWithin(t, got, "Next's end")
	require.False(t, ok, "Next returned once the consumer ended")
	require.ErrorIs(t, cons.Err(), amqp.ErrClosed)
}

// The reader takes a lease back from a consumer that is not reading when a
// call starts to wait for its reply. The lease timer is set to an hour, so
// only the call's own claim can make the reply be read in time.
func TestLentSocketTakenBackForACall(t *testing.T) {
	cons, sc, id := fakeConsumerWith(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
	leaseTo(t, cons, sc, id)
	declared := declareInBackground(t, cons.Channel(), sc)
	require.NoError(t, sc.Send(t.Context(), id, &amqp.QueueDeclareOk{Queue: "other"}))
	err, _ := recvWithin(t, declared, "the declare")
	require.NoError(t, err)
	require.False(t, cons.LeasedForTest())
}

// A waiter that waits already when the reader would lend the socket holds
// the lending off: its claim came before the lease and found nothing to
// take back. For each waiter that knows when it stops waiting, on a second
// channel: the delivery that would start a lease comes after it waits, and
// the application calls Next no more; with an hour-long lease timer, only
// the held-off lease lets what the waiter waits for be read.
func TestLentSocketNotLentWhileSomeoneWaits(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, conn *amqp.Connection, other *amqp.Channel, sc *amqptest.Conn)
		wait  func(ctx context.Context, other *amqp.Channel) error
		sent  func(t *testing.T, sc *amqptest.Conn) // what the server receives once the waiter waits
		reply func(ctx context.Context, other *amqp.Channel, sc *amqptest.Conn) error
	}{{
		name: "call",
		wait: func(ctx context.Context, other *amqp.Channel) error {
			_, err := other.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "other"})
			return err
		},
		sent: func(t *testing.T, sc *amqptest.Conn) { amqptest.Expect[*amqp.QueueDeclare](t, sc) },
		reply: func(ctx context.Context, other *amqp.Channel, sc *amqptest.Conn) error {
			return sc.Send(ctx, other.ID(), &amqp.QueueDeclareOk{Queue: "other"})
		},
	}, {
		name: "Close",
		wait: func(ctx context.Context, other *amqp.Channel) error { return other.Close(ctx) },
		sent: func(t *testing.T, sc *amqptest.Conn) { amqptest.Expect[*amqp.ChannelClose](t, sc) },
		reply: func(ctx context.Context, other *amqp.Channel, sc *amqptest.Conn) error {
			return sc.Send(ctx, other.ID(), &amqp.ChannelCloseOk{})
		},
	}, {
		name: "Confirmation.Wait",
		setup: func(t *testing.T, _ *amqp.Connection, other *amqp.Channel, sc *amqptest.Conn) {
			confirmSelectFake(t, other, sc)
		},
		wait: func(ctx context.Context, other *amqp.Channel) error {
			conf, err := other.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("x")})
			if err != nil {
				return err
			}
			return conf.Wait(ctx)
		},
		sent: func(t *testing.T, sc *amqptest.Conn) { amqptest.ExpectPublish(t, sc) },
		reply: func(ctx context.Context, other *amqp.Channel, sc *amqptest.Conn) error {
			return sc.Send(ctx, other.ID(), &amqp.BasicAck{DeliveryTag: 1})
		},
	}, {
		name: "blocked publish",
		setup: func(t *testing.T, conn *amqp.Connection, _ *amqp.Channel, sc *amqptest.Conn) {
			require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionBlocked{Reason: "low on memory"}))
			require.Eventually(t, func() bool { blocked, _ := conn.Blocked(); return blocked }, waitBudget(t), time.Millisecond)
		},
		wait: func(ctx context.Context, other *amqp.Channel) error {
			_, err := other.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("x")})
			return err
		},
		sent: func(*testing.T, *amqptest.Conn) {},
		reply: func(ctx context.Context, _ *amqp.Channel, sc *amqptest.Conn) error {
			return sc.Send(ctx, 0, &amqp.ConnectionUnblocked{})
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitBudget(t)) // a send to a reader that never reads fails, not hangs
			defer cancel()
			conn, sc := fakeConn(t, amqptest.Options{}, amqp.WithLeaseMax(amqp.Config{}, time.Hour))
			ch := openFakeChannel(t, conn, sc)
			cons := consumeOnFake(t, ch, sc, amqp.ConsumerOptions{})
			other := openFakeChannel(t, conn, sc)
			if tc.setup != nil {
				tc.setup(t, conn, other, sc)
			}
			first := nextOnce(ctx, cons)
			waitUntilNextWaits(t, cons)
			waited := make(chan error, 1)
			go func() { waited <- tc.wait(ctx, other) }()
			tc.sent(t, sc)
			require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 1 }, waitBudget(t), time.Millisecond)

			require.NoError(t, sc.Deliver(ctx, ch.ID(), "c", 1, amqp.Properties{}, []byte("first")))
			d := gotDelivery(t, first)
			require.Equal(t, "first", string(d.Body))
			require.False(t, cons.LeasedForTest(), "lent while someone waits")
			require.NoError(t, tc.reply(ctx, other, sc))
			err, _ := recvWithin(t, waited, "the waiter")
			require.NoError(t, err)
			require.Zero(t, conn.ReaderWaitersForTest())
		})
	}
}

// A call that starts waiting after the reader decided to lend the socket
// and before it stored the lease: lendTo's own look at the waiters takes
// the lease straight back, so the reply is read although the application
// calls Next no more.
func TestLentSocketLeaseTakenBackForACallInTheLendingWindow(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), waitBudget(t)) // a send to a reader that never reads fails, not hangs
	defer cancel()
	inWindow, goOn := make(chan struct{}), make(chan struct{})
	var once sync.Once
	window := func() { // on the reader goroutine, which cannot read the declare-ok meanwhile
		once.Do(func() {
			close(inWindow)
			select {
			case <-goOn:
			case <-ctx.Done():
			}
		})
	}
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.WithBeforeLease(amqp.WithLeaseMax(amqp.Config{}, time.Hour), window))
	ch := openFakeChannel(t, conn, sc)
	cons := consumeOnFake(t, ch, sc, amqp.ConsumerOptions{})
	other := openFakeChannel(t, conn, sc)
	first := nextOnce(ctx, cons)
	waitUntilNextWaits(t, cons)
	require.NoError(t, sc.Deliver(ctx, ch.ID(), "c", 1, amqp.Properties{}, []byte("first")))
	recvWithin(t, inWindow, "the reader deciding to lend")
	declared := declareInBackground(t, other, sc)
	require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 1 }, waitBudget(t), time.Millisecond)
	close(goOn)

	d := gotDelivery(t, first)
	require.Equal(t, "first", string(d.Body))
	require.NoError(t, sc.Send(ctx, other.ID(), &amqp.QueueDeclareOk{Queue: "other"}))
	err, _ := recvWithin(t, declared, "the declare")
	require.NoError(t, err)
	require.False(t, cons.LeasedForTest())
}

// A call that starts while Next reads the socket: the lease
// Next keeps when its delivery comes is taken back at once for the call.
func TestLentSocketLeaseNotKeptWhileACallWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), waitBudget(t)) // a send to a reader that never reads fails, not hangs
	defer cancel()
	cons, sc, id := fakeConsumerWith(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
	conn := cons.Channel().Connection()
	leaseTo(t, cons, sc, id)
	second := nextOnce(t.Context(), cons)
	waitUntilLeading(t, cons)
	declared := declareInBackground(t, cons.Channel(), sc)
	require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 1 }, waitBudget(t), time.Millisecond)
	require.True(t, cons.LeadingForTest(), "Next still reads: the call found nothing to take back")

	require.NoError(t, sc.Deliver(ctx, id, "c", 1, amqp.Properties{}, []byte("second")))
	d := gotDelivery(t, second)
	require.Equal(t, "second", string(d.Body))
	require.NoError(t, sc.Send(ctx, id, &amqp.QueueDeclareOk{Queue: "other"}))
	err, _ := recvWithin(t, declared, "the declare")
	require.NoError(t, err)
	require.False(t, cons.LeasedForTest())
}

// declareInBackground declares a queue on ch from another goroutine and
// returns once the fake server has the declare; its result comes on the
// channel returned.
func declareInBackground(t *testing.T, ch *amqp.Channel, sc *amqptest.Conn) <-chan error {
	t.Helper()
	declared := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(t.Context(), amqp.QueueDeclare{Queue: "other"})
		declared <- err
	}()
	_, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc)
	require.Equal(t, "other", qd.Queue)
	return declared
}

// leaseTo delivers one message to cons and takes it with Next, which leaves
// the socket lent to cons with nobody reading it.
func leaseTo(t *testing.T, cons *amqp.Consumer, sc *amqptest.Conn, id uint16) {
	t.Helper()
	first := make(chan error, 1)
	go func() {
		_, err := cons.Next(t.Context())
		first <- err
	}()
	waitUntilNextWaits(t, cons)
	require.NoError(t, sc.Deliver(t.Context(), id, "c", 1, amqp.Properties{}, []byte("first")))
	err, _ := recvWithin(t, first, "the first delivery")
	require.NoError(t, err)
	require.True(t, cons.LeasedForTest())
}

// So does a publisher that waits for its confirmation, with Wait or by
// selecting on Done.
func TestLentSocketTakenBackForAConfirmation(t *testing.T) {
	for _, how := range []string{"Wait", "Done"} {
		t.Run(how, func(t *testing.T) {
			conn, sc := fakeConn(t, amqptest.Options{}, amqp.WithLeaseMax(amqp.Config{}, time.Hour))
			pub := openFakeChannel(t, conn, sc)
			confirmSelectFake(t, pub, sc)
			ch := openFakeChannel(t, conn, sc)
			cons := consumeOnFake(t, ch, sc, amqp.ConsumerOptions{})
			leaseTo(t, cons, sc, ch.ID())

			conf, err := pub.Publish(t.Context(), amqp.Publishing{RoutingKey: "q", Body: []byte("x")})
			require.NoError(t, err)
			amqptest.Expect[*amqp.BasicPublish](t, sc)
			waited := make(chan error, 1)
			go func() {
				if how == "Wait" {
					waited <- conf.Wait(t.Context())
					return
				}
				<-conf.Done()
				if !conf.Acked() {
					waited <- errors.New("not acked")
					return
				}
				waited <- nil
			}()
			require.Eventually(t, func() bool { return !cons.LeasedForTest() }, waitBudget(t), time.Millisecond)
			require.NoError(t, sc.Send(t.Context(), pub.ID(), &amqp.BasicAck{DeliveryTag: 1}))
			err, _ = recvWithin(t, waited, "the confirmation")
			require.NoError(t, err)
		})
	}
}

// A second consumer ends the lending: its subscription takes the lease back
// from the first, which is not reading, and the second gets its deliveries
// although the first never calls Next again. With two consumers the socket
// is lent to neither.
func TestLentSocketTakenBackByASecondConsumer(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.WithLeaseMax(amqp.Config{}, time.Hour))
	ch := openFakeChannel(t, conn, sc)
	first := consumeOnFake(t, ch, sc, amqp.ConsumerOptions{})
	leaseTo(t, first, sc, ch.ID())

	ch2 := openFakeChannel(t, conn, sc)
	second := consumeOnFake(t, ch2, sc, amqp.ConsumerOptions{})
	got := nextInto(t, second)
	for r := range 3 {
		waitUntilNextWaits(t, second)
		require.NoError(t, sc.Deliver(t.Context(), ch2.ID(), "c", 5, amqp.Properties{}, []byte("m")))
		for range 5 {
			d := gotDelivery(t, got)
			require.Equal(t, "m", string(d.Body), "round %d", r)
		}
		require.False(t, second.LeadingForTest())
		require.False(t, first.LeasedForTest())
	}
}

// A lease nobody reads under ends after the lease timer's bound, so what
// the server sends unasked still arrives: here the close of the
// consumer's channel, while the application never calls Next again.
func TestLentSocketLeaseTimerReadsTheServer(t *testing.T) {
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{})
	leaseTo(t, cons, sc, id)
	require.NoError(t, sc.CloseChannel(t.Context(), id, amqp.CodeAccessRefused, "gone", nil))
	recvWithin(t, cons.Done(), "the channel's close to be read")
	var amqpErr *amqp.Error
	require.ErrorAs(t, cons.Err(), &amqpErr)
	require.Equal(t, amqp.CodeAccessRefused, amqpErr.Code)
}

// Backpressure while Next reads: a burst larger than the consumer's buffer
// stops the reading at a full buffer (the reader goroutine takes over the
// wait for room, holding the rest unread) and nothing is lost or reordered.
func TestLentSocketBackpressure(t *testing.T) {
	const limit, n = 4, 50
	cons, sc, id := fakeConsumerWith(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{BufferLimit: limit})
	leaseTo(t, cons, sc, id)
	first := nextOnce(t.Context(), cons)
	waitUntilLeading(t, cons)
	require.NoError(t, sc.Deliver(t.Context(), id, "c", n, amqp.Properties{}, []byte("m")))
	d := gotDelivery(t, first)
	require.Equal(t, uint64(2), d.DeliveryTag)
	conn := cons.Channel().Connection()
	require.Eventually(t, conn.ReaderPausedForTest, waitBudget(t), time.Millisecond, "the reader never waited for room")
	require.LessOrEqual(t, cons.BufferedForTest(), limit)
	for tag := uint64(3); tag <= n+1; tag++ {
		d, err := cons.Next(t.Context())
		require.NoError(t, err)
		require.Equal(t, tag, d.DeliveryTag)
		require.LessOrEqual(t, cons.BufferedForTest(), limit)
	}
	// The reader lends the socket again as soon as a delivery finds Next
	// waiting.
	got := nextOnce(t.Context(), cons)
	require.Eventually(t, func() bool { return cons.WaitingForTest() > 0 || cons.LeadingForTest() }, waitBudget(t), time.Millisecond)
	require.NoError(t, sc.Deliver(t.Context(), id, "c", 1, amqp.Properties{}, []byte("again")))
	d = gotDelivery(t, got)
	require.Equal(t, "again", string(d.Body))
	require.Eventually(t, cons.LeasedForTest, waitBudget(t), time.Millisecond)
}

// The server's connection.close, read by a leading Next, ends the
// connection as it would through the reader: Next returns the server's
// error and Close finds nothing running.
func TestLentSocketServerCloseWhileLeading(t *testing.T) {
	cons, sc, _, got := leadingConsumer(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
	require.NoError(t, sc.CloseConnection(t.Context(), amqp.CodeInternalError, "bye", nil))
	_, ok := recvWithin(t, got, "Next's end")
	require.False(t, ok)
	var amqpErr *amqp.Error
	require.ErrorAs(t, cons.Err(), &amqpErr)
	require.Equal(t, amqp.CodeInternalError, amqpErr.Code)
	recvWithin(t, cons.Channel().Connection().Done(), "the connection's end")
}

// Close while Next reads the socket: Close returns, and so does Next.
func TestLentSocketCloseWhileLeading(t *testing.T) {
	cons, sc, _, got := leadingConsumer(t, amqp.WithLeaseMax(amqp.Config{}, time.Hour), amqp.ConsumerOptions{})
	conn := cons.Channel().Connection()
	closed := make(chan error, 1)
	go func() { closed <- conn.Close(t.Context()) }()
	amqptest.Expect[*amqp.ConnectionClose](t, sc)
	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionCloseOk{}))
	err, _ := recvWithin(t, closed, "Close")
	require.NoError(t, err)
	_, ok := recvWithin(t, got, "Next's end")
	require.False(t, ok)
	require.True(t, errors.Is(cons.Err(), amqp.ErrClosed), "got %v", cons.Err())
}

// A Confirmation.Wait that began before the connection was lost waits on
// through the recovery, counted all along (the count is the connection's): while the
// republished message's ack is due, the resubscribed consumer, the new
// connection's only one, is not lent the socket, so the ack is read
// although the application calls Next no more.
func TestLentSocketNotLentWhileAWaitCrossesARecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), waitBudget(t)) // a send to a reader that never reads fails, not hangs
	defer cancel()
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	conn, err := amqp.DialConfig(ctx, amqp.WithLeaseMax(recoveringConfig(b, amqp.RecoveryConfig{Republish: true}), time.Hour))
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	pub, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, pub.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c1"})
	require.NoError(t, err)

	b.holdAcks.Store(true)
	conf, err := pub.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("kept")})
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() { waited <- conf.Wait(ctx) }()
	require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 1 }, waitBudget(t), time.Millisecond)
	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	second := b.conn(t, 1)
	require.Eventually(t, func() bool {
		return slices.Contains(b.methods(second), fmt.Sprintf("%d basic.publish q kept", pub.ID()))
	},
		waitBudget(t), time.Millisecond, "republished")
	require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 1 }, waitBudget(t), time.Millisecond,
		"the Wait still counts after the recovery")

	first := nextOnce(ctx, cons)
	waitUntilNextWaits(t, cons)
	require.NoError(t, second.Deliver(ctx, ch.ID(), "c1", 1, amqp.Properties{}, []byte("after")))
	d := gotDelivery(t, first)
	require.Equal(t, "after", string(d.Body))
	require.False(t, cons.LeasedForTest(), "lent while a Wait waits")
	require.NoError(t, second.Send(ctx, pub.ID(), &amqp.BasicAck{DeliveryTag: 1}))
	err, _ = recvWithin(t, waited, "the confirmation")
	require.NoError(t, err)
}

// A publish held by connection.blocked on a channel that has no link yet
// (the recovery is still restoring the topology) counts as a waiter too:
// once the recovery ends, the consumer, the new connection's only one, is
// not lent the socket while the unblock is due, so the publish goes out
// although the application calls Next no more.
func TestLentSocketNotLentWhileAPublishHeldInARecoveryWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), waitBudget(t)) // a send to a reader that never reads fails, not hangs
	defer cancel()
	release := make(chan struct{})
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, _ *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if qd, ok := cmd.Method.(*amqp.QueueDeclare); ok && idx == 1 && qd.Queue == "held" {
			select { // the topology first, so no channel has a link meanwhile
			case <-release:
			case <-ctx.Done():
			}
		}
		return false, nil
	})
	conn, err := amqp.DialConfig(ctx, amqp.WithLeaseMax(recoveringConfig(b, amqp.RecoveryConfig{}), time.Hour))
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "held"})
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "held", ConsumerTag: "c1"})
	require.NoError(t, err)
	pub, err := conn.Channel(ctx)
	require.NoError(t, err)

	b.conn(t, 0).Drop()
	second := b.conn(t, 1)
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(b.methods(second), func(m string) bool { return strings.Contains(m, "queue.declare \"held\"") })
	},
		waitBudget(t), time.Millisecond, "the topology restoring")
	require.NoError(t, second.Send(ctx, 0, &amqp.ConnectionBlocked{Reason: "low on memory"}))
	require.Eventually(t, func() bool { blocked, _ := conn.Blocked(); return blocked }, waitBudget(t), time.Millisecond)
	require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 1 }, waitBudget(t), time.Millisecond,
		"the recovery's own declare waits for its reply")
	published := make(chan error, 1)
	go func() {
		_, err := pub.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("held")})
		published <- err
	}()
	require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 2 }, waitBudget(t), time.Millisecond,
		"the held publish counts although its channel has no link")
	close(release)
	events.wait(t, amqp.RecoverySucceeded)

	first := nextOnce(ctx, cons)
	waitUntilNextWaits(t, cons)
	require.NoError(t, second.Deliver(ctx, ch.ID(), "c1", 1, amqp.Properties{}, []byte("after")))
	d := gotDelivery(t, first)
	require.Equal(t, "after", string(d.Body))
	require.False(t, cons.LeasedForTest(), "lent while a publish is held")
	require.NoError(t, second.Send(ctx, 0, &amqp.ConnectionUnblocked{}))
	err, _ = recvWithin(t, published, "the publish")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return slices.Contains(b.methods(second), fmt.Sprintf("%d basic.publish q held", pub.ID()))
	},
		waitBudget(t), time.Millisecond, "the held publish sent")

	// Nobody waits any more, and lending goes on.
	require.Eventually(t, func() bool { return conn.ReaderWaitersForTest() == 0 }, waitBudget(t), time.Millisecond)
	again := nextOnce(ctx, cons)
	waitUntilNextWaits(t, cons)
	require.NoError(t, second.Deliver(ctx, ch.ID(), "c1", 1, amqp.Properties{}, []byte("again")))
	require.Equal(t, "again", string(gotDelivery(t, again).Body))
	require.Eventually(t, cons.LeasedForTest, waitBudget(t), time.Millisecond)
}
