package amqptest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
)

// TestSynctest runs the server in a testing/synctest bubble through
// Server.Dial (net.Pipe): timeouts and heartbeats use virtual time, so an
// hour passes at once.
func TestSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{Heartbeat: 60})
		c := dialPipe(t, srv)
		c.handshake(handshake{heartbeat: 10})
		sc := accept(t, srv)

		// A read that times out after an hour of virtual time.
		start := time.Now()
		hour, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		if _, err := sc.ReadCommand(hour); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ReadCommand() error = %v", err)
		}
		if d := time.Since(start); d != time.Hour {
			t.Errorf("the read gave up after %v, want exactly 1h", d)
		}

		// Serve sends heartbeats every half negotiated interval.
		served := make(chan error, 1)
		go func() { served <- sc.Serve(t.Context(), amqptest.AutoReply) }()
		start = time.Now()
		for i := 1; i <= 3; i++ {
			f, err := c.next()
			if err != nil || f.Type != amqp.FrameHeartbeat {
				t.Fatalf("client read %+v, %v", f, err)
			}
			if d := time.Since(start); d != time.Duration(i)*5*time.Second {
				t.Errorf("heartbeat %d after %v", i, d)
			}
		}
		c.send(1, &amqp.ChannelOpen{})
		expectClient[*amqp.ChannelOpenOk](c)
		c.send(0, &amqp.ConnectionClose{ReplyCode: 200})
		expectClient[*amqp.ConnectionCloseOk](c)
		c.expectEOF()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})
}

// TestSynctestClient drives the client engine in a bubble: after a
// two-minute silence of the server, with heartbeats of 10 s negotiated, the
// client gives up on the connection within its 2×interval bound.
func TestSynctestClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{Heartbeat: 10})
		conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
		if err != nil {
			t.Fatal(err)
		}
		sc := accept(t, srv)
		if conn.Heartbeat() != 10*time.Second {
			t.Errorf("negotiated heartbeat %v", conn.Heartbeat())
		}
		// The server reads (the client's heartbeats) but never writes.
		go func() { _ = sc.WaitClosed(t.Context()) }()
		start := time.Now()
		select {
		case <-conn.Done():
		case <-time.After(2 * time.Minute):
			t.Fatal("the client did not notice the server's silence")
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("the client noticed the silence after %v", d)
		}
		if !errors.Is(conn.Err(), amqp.ErrHeartbeatTimeout) {
			t.Errorf("conn.Err() = %v, want ErrHeartbeatTimeout", conn.Err())
		}
	})
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// expectFailure runs f with a fatalRecorder and returns its message.
func expectFailure(t *testing.T, f func(tb testing.TB)) string {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(rec)
	}()
	<-done
	return rec.msg
}

func TestExpectFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})

		c.send(1, &amqp.BasicQos{PrefetchCount: 3})
		msg := expectFailure(t, func(tb testing.TB) { amqptest.Expect[*amqp.QueueDeclare](tb, sc) })
		if want := "expected queue.declare from the client, got channel 1: basic.qos &{PrefetchSize:0 PrefetchCount:3 Global:false}"; !strings.Contains(msg, want) {
			t.Errorf("Expect failed with %q, want it to contain %q", msg, want)
		}

		// The client sends nothing: in the bubble, the 10 s timeout passes at once.
		start := time.Now()
		msg = expectFailure(t, func(tb testing.TB) { amqptest.ExpectPublish(tb, sc) })
		if !strings.Contains(msg, "expected basic.publish from the client: context deadline exceeded") {
			t.Errorf("ExpectPublish failed with %q", msg)
		}
		if d := time.Since(start); d != amqptest.DefaultExpectTimeout {
			t.Errorf("ExpectPublish gave up after %v", d)
		}
	})
}
