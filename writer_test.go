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
