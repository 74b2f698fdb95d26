package amqp_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestHeartbeatsSentWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, sc := dialHeartbeating(t)
		require.Equal(t, 10*time.Second, conn.Heartbeat())

		// The server keeps talking; the client, idle, must send a
		// heartbeat every 5 s (half the interval).
		start := time.Now()
		var arrivals []time.Duration
		for len(arrivals) < 3 {
			ctx, cancel := context.WithTimeout(t.Context(), 6*time.Second)
			f, err := sc.ReadFrame(ctx)
			cancel()
			require.NoError(t, err, "no heartbeat within 6 s")
			require.Equal(t, amqp.FrameHeartbeat, f.Type)
			arrivals = append(arrivals, time.Since(start))
			require.NoError(t, sc.SendHeartbeat(t.Context()))
		}
		require.Equal(t, []time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second}, arrivals)
		require.True(t, conn.IsAlive())
		require.NoError(t, conn.Close(t.Context()))
	})
}

func TestHeartbeatTimeoutClosesConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, _ := dialHeartbeating(t)
		ch := make(chan error, 1)
		go func() {
			// A call pending when the peer dies gets the timeout too.
			_, err := conn.Channel(t.Context())
			ch <- err
		}()
		start := time.Now()
		<-conn.Done() // the server never sends anything
		require.Equal(t, 20*time.Second, time.Since(start), "two heartbeat intervals of silence")
		require.ErrorIs(t, conn.Err(), amqp.ErrHeartbeatTimeout)
		require.False(t, conn.IsAlive())
		require.True(t, amqp.Recoverable(conn.Err()))
		require.ErrorIs(t, <-ch, amqp.ErrHeartbeatTimeout)
		require.NoError(t, conn.Close(t.Context()))
	})
}

func TestNoHeartbeatWhileWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, sc := dialHeartbeating(t)
		ch := openFakeChannel(t, conn, sc)
		// Publish every second for 12 s: the writes are liveness enough, so
		// no heartbeat frame is needed.
		for i := range 12 {
			_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q", Body: []byte{byte(i)}})
			require.NoError(t, err)
			p := amqptest.ExpectPublish(t, sc)
			require.Equal(t, []byte{byte(i)}, p.Body)
			require.NoError(t, sc.SendHeartbeat(t.Context()))
			time.Sleep(time.Second)
		}
		require.NoError(t, conn.SendHeartbeat(t.Context()), "an explicit heartbeat is sent on request")
		f, err := sc.ReadFrame(t.Context())
		require.NoError(t, err)
		require.Equal(t, amqp.FrameHeartbeat, f.Type)
		require.NoError(t, conn.Close(t.Context()))
	})
}

// An idle connection with heartbeats on runs two goroutines, the reader and
// the writer: the heartbeat is a timer, not a goroutine of its own (and the
// callback goroutine starts only with the first callback).
func TestIdleConnectionRunsTwoGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, _ := dialHeartbeating(t)
		require.Equal(t, 10*time.Second, conn.Heartbeat())
		synctest.Wait()
		require.Equal(t, 2, clientGoroutines(), "the reader and the writer")
		time.Sleep(time.Minute) // heartbeats go out meanwhile; the server answers none, so...
		synctest.Wait()
		require.False(t, conn.IsAlive(), "...the heartbeat timer ended the connection")
		require.ErrorIs(t, conn.Err(), amqp.ErrHeartbeatTimeout)
		synctest.Wait()
		require.Zero(t, clientGoroutines(), "nothing of the connection runs after its end")
	})
}

// clientGoroutines counts the goroutines of the calling synctest bubble that
// run code of the client (not of amqptest or the test): goroutines an
// earlier test left winding down are in no bubble, or in another.
func clientGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	stacks := strings.Split(string(buf), "\n\n")
	bubble := ""
	for _, g := range stacks { // the first is the caller's
		header, _, _ := strings.Cut(g, "\n")
		if i := strings.Index(header, "synctest bubble"); i >= 0 {
			bubble = strings.TrimRight(header[i:], "]:")
		}
		break
	}
	n := 0
	for _, g := range stacks {
		header, _, _ := strings.Cut(g, "\n")
		if bubble != "" && !strings.Contains(header, bubble+"]") && !strings.Contains(header, bubble+",") {
			continue
		}
		if strings.Contains(g, "github.com/amqp-go/amqp.(*") && !strings.Contains(g, "amqp/amqptest") && !strings.Contains(g, "_test.") {
			n++
		}
	}
	return n
}

// dialHeartbeating dials a fake server that proposes a 10 s heartbeat, inside
// the caller's synctest bubble, and returns both ends.
func dialHeartbeating(t *testing.T) (*amqp.Connection, *amqptest.Conn) {
	t.Helper()
	srv := amqptest.NewServer(t, amqptest.Options{Heartbeat: 10})
	conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
	require.NoError(t, err)
	sc, err := srv.Accept(t.Context())
	require.NoError(t, err)
	return conn, sc
}
