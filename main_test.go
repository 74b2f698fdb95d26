package amqp_test

import (
	"flag"
	"os"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests: every
// connection's reader, writer, heartbeat and callback goroutines must end
// with it.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		// The fuzzing engine's own goroutines may still be winding down.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
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
