package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

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

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	srv := amqptest.NewServer(nil, amqptest.Options{Heartbeat: 1, Handler: amqptest.AutoReply})
	defer srv.Close()
	conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
	require.NoError(t, err)
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(t.Context(), amqp.ConfirmSelect{}))
	ch.OnAck(func(uint64, bool) { time.Sleep(10 * time.Millisecond) }) // a slow listener
	for range 10 {
		_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q"})
		require.NoError(t, err)
	}
	_, err = ch.Consume(t.Context(), amqp.BasicConsume{Queue: "q"})
	require.NoError(t, err)
	require.NoError(t, conn.Close(t.Context()))
	require.NoError(t, srv.Close())
	goleak.VerifyNone(t, before)
}
