package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Bug: a writer goroutine stuck in Write is never given a deadline, so the
// closer goroutine waits on w.shutdown forever and never closes the socket.
func TestCloseClosesTheSocketWhileTheWriterIsStuck(t *testing.T) {
	conn, sc, sconn := stallDial(t, amqptest.Options{})
	ch := openFakeChannel(t, conn, sc)
	sconn.mu.Lock()
	sconn.stalled = true
	sconn.mu.Unlock()
	_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q", Body: []byte("x")})
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond) // the writer goroutine is now in Write
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = conn.Close(ctx)
	t.Logf("Close: %v", err)
	select {
	case <-sconn.closed:
	case <-time.After(4 * time.Second): // well past finalFlushTimeout (2s)
		t.Fatal("socket still open 4s after Close: the closer goroutine is stuck behind the writer")
	}
}

// Bug: a synchronous call writes its own request in flushDirect; on a stalled
// socket it blocks in Write and its ctx is not honoured. Connection.Close too.
func TestCallAndCloseHonourCtxOnAStalledSocket(t *testing.T) {
	conn, sc, sconn := stallDial(t, amqptest.Options{})
	ch := openFakeChannel(t, conn, sc)
	sconn.mu.Lock()
	sconn.stalled = true
	sconn.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "x"})
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("declare returned %v", err)
	case <-time.After(2 * time.Second):
		t.Error("QueueDeclare with a 200ms ctx still blocked after 2s (in flushDirect's Write)")
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		closed <- conn.Close(ctx)
	}()
	select {
	case err := <-closed:
		t.Logf("Close returned %v", err)
	case <-time.After(2 * time.Second):
		t.Error("Close with a 200ms ctx still blocked after 2s")
	}
	sconn.Close()
}

// Bug: Connection.Close cannot complete while the reader waits for room in a
// consumer's buffer: connection.close-ok is never read.
func TestCloseCompletesWhileTheReaderIsPaused(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	consumeFake(t, ch, sc, "c", true, 2)
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 10, amqp.Properties{}, []byte("m")))
	time.Sleep(50 * time.Millisecond)
	go func() {
		// Play the server: answer connection.close.
		amqptest.Expect[*amqp.ConnectionClose](t, sc)
		_ = sc.Send(context.Background(), 0, &amqp.ConnectionCloseOk{})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := conn.Close(ctx)
	require.NoError(t, err, "Close of a healthy connection with an unread consumer")
}

func TestChannelCloseCompletesWhileTheReaderIsPaused(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	consumeFake(t, ch, sc, "c", true, 2)
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 10, amqp.Properties{}, []byte("m")))
	time.Sleep(50 * time.Millisecond)
	go func() {
		id, _ := amqptest.Expect[*amqp.ChannelClose](t, sc)
		_ = sc.Send(context.Background(), id, &amqp.ChannelCloseOk{})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, ch.Close(ctx))
}

// Bug: two concurrent Next calls, two deliveries: one Next is never woken.
func TestConcurrentNextEachGetADelivery(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeFake(t, ch, sc, "c", true, 100)
	res := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := cons.Next(ctx)
			res <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // both wait
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 2, amqp.Properties{}, []byte("m")))
	require.NoError(t, <-res)
	require.NoError(t, <-res, "second Next missed its delivery")
}

func TestConcurrentNextAllWokenByTheConsumersEnd(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeFake(t, ch, sc, "c", true, 100)
	res := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := cons.Next(ctx)
			res <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicCancel{ConsumerTag: "c"}))
	require.ErrorIs(t, <-res, amqp.ErrCancelledByServer)
	require.ErrorIs(t, <-res, amqp.ErrCancelledByServer, "second Next not woken by the end")
}

// Bug: an abandoned consumer (Consume's ctx ended before consume-ok) is not
// marked cancelling, so deliveries before cancel-ok fill its buffer and the
// reader waits forever: the whole connection stalls.
func TestAbandonedConsumerDoesNotStallTheReader(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	other := openFakeChannel(t, conn, sc)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"}, amqp.ConsumerOptions{BufferLimit: 1})
		errc <- err
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	cancel()
	require.Error(t, <-errc)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: "c"}))
	// The server had these in flight before it reads the client's basic.cancel.
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 3, amqp.Properties{}, []byte("m")))
	amqptest.Expect[*amqp.BasicCancel](t, sc)
	go sc.Send(context.Background(), ch.ID(), &amqp.BasicCancelOk{ConsumerTag: "c"})
	declared := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := other.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "x"})
		declared <- err
	}()
	// The client hands the abandoned consumer's deliveries back (basic.reject
	// after cancel-ok), possibly before the declare: skip those.
	rejected := 0
	for {
		cmd, err := sc.ReadCommand(t.Context())
		require.NoError(t, err)
		if rej, ok := cmd.Method.(*amqp.BasicReject); ok {
			require.True(t, rej.Requeue)
			rejected++
			continue
		}
		require.IsType(t, &amqp.QueueDeclare{}, cmd.Method)
		break
	}
	go sc.Send(context.Background(), other.ID(), &amqp.QueueDeclareOk{Queue: "x"})
	require.NoError(t, <-declared, "reader stuck on the abandoned consumer's full buffer")
}

// Bug: two returns before one multiple ack: the first returned publish is
// reported as acked, the return is lost.
func TestReturnsBeforeAMultipleAckStayReturned(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	confirmSelectFake(t, ch, sc)
	c1, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "nope1", Mandatory: true})
	require.NoError(t, err)
	c2, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "nope2", Mandatory: true})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	amqptest.ExpectPublish(t, sc)
	require.NoError(t, sc.SendContent(t.Context(), ch.ID(), &amqp.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nope1"}, amqp.Properties{}, nil))
	require.NoError(t, sc.SendContent(t.Context(), ch.ID(), &amqp.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nope2"}, amqp.Properties{}, nil))
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicAck{DeliveryTag: 2, Multiple: true}))
	require.ErrorIs(t, c2.Wait(t.Context()), amqp.ErrReturned)
	require.ErrorIs(t, c1.Wait(t.Context()), amqp.ErrReturned, "publish 1 was returned but reported acked")
}

func TestConcurrentNextManyWaitersEachGetADelivery(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeFake(t, ch, sc, "c", true, 1000)
	for round := range 50 {
		const n = 8
		res := make(chan error, n)
		for range n {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, err := cons.Next(ctx)
				res <- err
			}()
		}
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", n, amqp.Properties{}, []byte("m")))
		for i := range n {
			if err := <-res; err != nil {
				t.Fatalf("round %d: waiter %d: %v (a delivery sat in the buffer while a Next waited)", round, i, err)
			}
		}
	}
}

func TestCloseHonoursCtxOnAStalledSocket(t *testing.T) {
	conn, sc, sconn := stallDial(t, amqptest.Options{})
	_ = openFakeChannel(t, conn, sc)
	sconn.mu.Lock()
	sconn.stalled = true
	sconn.mu.Unlock()
	closed := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		closed <- conn.Close(ctx)
	}()
	select {
	case err := <-closed:
		t.Logf("Close returned %v after %v", err, time.Since(start))
	case <-time.After(3 * time.Second):
		t.Error("Close with a 200ms ctx still blocked after 3s")
	}
	sconn.Close()
}

func TestCloseFromAListenerDoesNotDeadlock(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{})
	conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
	require.NoError(t, err)
	sc, err := srv.Accept(t.Context())
	require.NoError(t, err)
	go func() {
		amqptest.Expect[*amqp.ConnectionClose](t, sc)
		_ = sc.Send(context.Background(), 0, &amqp.ConnectionCloseOk{})
		sc.Drop()
	}()
	res := make(chan error, 1)
	conn.OnBlocked(func(amqp.Blocking) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		res <- conn.Close(ctx)
	})
	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionBlocked{Reason: "x"}))
	require.NoError(t, <-res, "Close from a listener waits for the listener's own goroutine")
}
