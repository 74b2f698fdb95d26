package amqp_test

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
	"github.com/stretchr/testify/require"
)

// Frame-level tests of the engine against the scripted fake server.

func TestHandshakeClientProperties(t *testing.T) {
	_, sc := fakeConn(t, amqptest.Options{}, amqp.Config{ConnectionName: "orders-service"})
	props := sc.StartOk().ClientProperties
	require.Equal(t, "orders-service", props["connection_name"])
	caps, ok := props["capabilities"].(amqp.Table)
	require.True(t, ok)
	for _, c := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
		"connection.blocked", "authentication_failure_close", "per_consumer_qos", "direct_reply_to"} {
		require.Equal(t, true, caps[c], c)
	}
	require.Equal(t, "PLAIN", sc.StartOk().Mechanism)
	require.Equal(t, "\x00guest\x00guest", sc.StartOk().Response)
}

func TestTuneNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		serverHB                     uint16
		clientHB                     time.Duration
		serverFrame, clientFrame     uint32
		wantHB                       time.Duration
		wantFrame                    uint32
		serverChannels, clientChanel uint16
		wantChannels                 uint16
	}{
		{"server's values", 60, 0, 131072, 0, 60 * time.Second, 131072, 2047, 0, 2047},
		{"smaller wins", 60, 10 * time.Second, 131072, 8192, 10 * time.Second, 8192, 2047, 100, 100},
		{"server smaller", 5, 30 * time.Second, 8192, 131072, 5 * time.Second, 8192, 64, 2047, 64},
		{"server off means client's", 0, 7 * time.Second, 131072, 0, 7 * time.Second, 131072, 2047, 0, 2047},
		{"client disables", 60, -1, 131072, 0, 0, 131072, 2047, 0, 2047},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, sc := fakeConn(t, amqptest.Options{Heartbeat: tc.serverHB, FrameMax: tc.serverFrame, ChannelMax: tc.serverChannels},
				amqp.Config{Heartbeat: tc.clientHB, FrameMax: tc.clientFrame, ChannelMax: tc.clientChanel})
			require.Equal(t, tc.wantHB, conn.Heartbeat())
			require.Equal(t, tc.wantFrame, conn.FrameMax())
			require.Equal(t, tc.wantChannels, conn.ChannelMax())
			require.Equal(t, uint16(tc.wantHB/time.Second), sc.TuneOk().Heartbeat)
			require.Equal(t, tc.wantFrame, sc.TuneOk().FrameMax)
		})
	}
}

func TestHandshakeFailures(t *testing.T) {
	t.Run("refused login", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{CheckAuth: func(string, string) error { return errors.New("bad credentials") }})
		_, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial, Username: "u", Password: "hunter2"})
		require.ErrorIs(t, err, amqp.ErrAccessRefused)
		require.NotContains(t, err.Error(), "hunter2")
	})
	t.Run("unknown vhost", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{CheckVhost: func(v string) error { return fmt.Errorf("vhost %s not found", v) }})
		_, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial, Vhost: "nope"})
		require.ErrorIs(t, err, amqp.ErrNotAllowed)
		require.Contains(t, err.Error(), "vhost nope not found")
	})
	t.Run("protocol header mismatch", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		errc := make(chan error, 1)
		go func() {
			_, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
			errc <- err
		}()
		sc, err := srv.Accept(t.Context())
		require.NoError(t, err)
		_, err = sc.ReadProtocolHeader(t.Context())
		require.NoError(t, err)
		require.NoError(t, sc.WriteRaw(t.Context(), []byte("AMQP\x01\x01\x00\x0a")))
		sc.Drop()
		err = <-errc
		require.ErrorIs(t, err, amqp.ErrProtocolVersion)
		var pe *amqp.ProtocolVersionError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, "AMQP\x01\x01\x00\x0a", string(pe.Header[:]))
	})
	t.Run("silent server bounded by ctx", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := amqp.DialConfig(ctx, amqp.Config{Dial: srv.Dial})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 5*time.Second)
	})
}

func TestHeartbeatsSentWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{Heartbeat: 10})
		conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
		require.NoError(t, err)
		sc, err := srv.Accept(t.Context())
		require.NoError(t, err)
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
		srv := amqptest.NewServer(t, amqptest.Options{Heartbeat: 10})
		conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
		require.NoError(t, err)
		_, err = srv.Accept(t.Context())
		require.NoError(t, err)
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
		srv := amqptest.NewServer(t, amqptest.Options{Heartbeat: 10})
		conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
		require.NoError(t, err)
		sc, err := srv.Accept(t.Context())
		require.NoError(t, err)
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

func TestBlockedConnection(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	events := make(chan amqp.Blocking, 2)
	conn.OnBlocked(func(b amqp.Blocking) { events <- b })
	ch := openFakeChannel(t, conn, sc)

	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionBlocked{Reason: "low on memory"}))
	require.Equal(t, amqp.Blocking{Active: true, Reason: "low on memory"}, <-events)
	blocked, reason := conn.Blocked()
	require.True(t, blocked)
	require.Equal(t, "low on memory", reason)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.ErrorIs(t, err, amqp.ErrBlocked)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var be *amqp.BlockedError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "low on memory", be.Reason)

	// A publish waiting when the block lifts goes through.
	done := make(chan error, 1)
	go func() {
		_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q", Body: []byte("after")})
		done <- err
	}()
	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionUnblocked{}))
	require.Equal(t, amqp.Blocking{Active: false}, <-events)
	require.NoError(t, <-done)
	p := amqptest.ExpectPublish(t, sc)
	require.Equal(t, "after", string(p.Body), "the blocked publish with the expired ctx was never sent")
}

func TestUpdateSecret(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	errc := make(chan error, 1)
	go func() { errc <- conn.UpdateSecret(t.Context(), "new-token", "refresh") }()
	_, m := amqptest.Expect[*amqp.ConnectionUpdateSecret](t, sc)
	require.Equal(t, "new-token", m.NewSecret)
	require.Equal(t, "refresh", m.Reason)
	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionUpdateSecretOk{}))
	require.NoError(t, <-errc)
}

func TestServerClosesConnection(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	confirmSelectFake(t, ch, sc)
	conf, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q"})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	require.NoError(t, sc.CloseConnection(t.Context(), amqp.CodeConnectionForced, "CONNECTION_FORCED - broker shutdown", nil))
	<-conn.Done()
	err = conn.Err()
	require.ErrorIs(t, err, amqp.ErrConnectionForced)
	var e *amqp.Error
	require.ErrorAs(t, err, &e)
	require.True(t, e.Server)
	require.True(t, e.Connection)
	require.True(t, amqp.Recoverable(err))
	werr := conf.Wait(t.Context())
	require.ErrorIs(t, werr, amqp.ErrConnectionForced, "an outstanding confirmation resolves with the error")
	require.ErrorIs(t, werr, amqp.ErrClosed)
	_, err = ch.QueueDeclare(t.Context(), amqp.QueueDeclare{})
	require.ErrorIs(t, err, amqp.ErrClosed)
}

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

func TestUnexpectedReplyIsConnectionError(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	errc := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(t.Context(), amqp.QueueDeclare{Queue: "x"})
		errc <- err
	}()
	id, _ := amqptest.Expect[*amqp.QueueDeclare](t, sc)
	require.NoError(t, sc.Send(t.Context(), id, &amqp.ExchangeDeclareOk{}))
	err := <-errc
	require.ErrorIs(t, err, amqp.ErrUnexpectedFrame)
	_, cl := amqptest.Expect[*amqp.ConnectionClose](t, sc)
	require.Equal(t, amqp.CodeUnexpectedFrame, cl.ReplyCode, "the client tells the server why it closes")
	<-conn.Done()
}

func TestHostileFrames(t *testing.T) {
	for name, tc := range map[string]struct {
		raw  []byte
		want error
	}{
		"oversized frame": {append([]byte{3, 0, 1, 0x40, 0, 0, 0}, make([]byte, 16)...), amqp.ErrFrameTooLarge},
		"bad frame end":   {[]byte{8, 0, 0, 0, 0, 0, 0, 0xAB}, amqp.ErrMalformedFrame},
		"unknown method":  {[]byte{1, 0, 0, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE}, amqp.ErrUnknownMethod},
	} {
		t.Run(name, func(t *testing.T) {
			conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
			require.NoError(t, sc.WriteRaw(t.Context(), tc.raw))
			<-conn.Done()
			require.ErrorIs(t, conn.Err(), tc.want)
		})
	}
	t.Run("body larger than MaxBodySize", func(t *testing.T) {
		conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{MaxBodySize: 1024})
		ch := openFakeChannel(t, conn, sc)
		// The client may close the pipe once it has read the header, before
		// the body is written: the write's error is not what is tested.
		_ = sc.SendContent(t.Context(), ch.ID(), &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1},
			amqp.Properties{}, make([]byte, 4096))
		<-conn.Done()
		require.ErrorIs(t, conn.Err(), amqp.ErrBodyTooLarge)
	})
}

// TestHostileLimitsAllocateNothingLarge checks that a frame or a body that
// claims to be huge ends the connection with a typed error before anything
// of its size is allocated. (With recovery on, such a protocol error is
// recovered: recovery_protocol_test.go.)
func TestHostileLimitsAllocateNothingLarge(t *testing.T) {
	const claimed = 1 << 30
	header := func(ch uint16) []byte {
		b, err := amqp.AppendMethodFrame(nil, ch, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})
		require.NoError(t, err)
		b, err = amqp.AppendHeaderFrame(b, ch, 60, claimed, &amqp.Properties{})
		require.NoError(t, err)
		return b
	}
	for name, tc := range map[string]struct {
		raw  func(ch uint16) []byte
		want error
	}{
		"frame claiming 1 GiB": {func(uint16) []byte { return []byte{3, 0, 1, 0x40, 0, 0, 0} }, amqp.ErrFrameTooLarge},
		"body claiming 1 GiB":  {header, amqp.ErrBodyTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
			ch := openFakeChannel(t, conn, sc)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			require.NoError(t, sc.WriteRaw(t.Context(), tc.raw(ch.ID())))
			<-conn.Done()
			runtime.ReadMemStats(&after)
			require.ErrorIs(t, conn.Err(), tc.want)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "nothing near the claimed size is allocated")
		})
	}
}

func TestFieldErrorsSendNothing(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: strings.Repeat("k", 300)})
	require.ErrorIs(t, err, amqp.ErrShortstrTooLong)
	_, err = ch.Publish(t.Context(), amqp.Publishing{Properties: amqp.Properties{Headers: amqp.Table{"x": make(chan int)}}})
	require.ErrorIs(t, err, amqp.ErrUnsupportedType)
	big := amqp.Table{"big": strings.Repeat("v", 200000)}
	_, err = ch.Publish(t.Context(), amqp.Publishing{Properties: amqp.Properties{Headers: big}})
	require.ErrorIs(t, err, amqp.ErrFrameTooLarge, "a header frame over frame_max")
	_, err = ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "ok", Body: []byte("fine")})
	require.NoError(t, err)
	p := amqptest.ExpectPublish(t, sc)
	require.Equal(t, "ok", p.Method.RoutingKey, "only the good publish reached the wire")
	require.NoError(t, conn.Err())
}

func TestServerFlowPausesPublishing(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	flows := make(chan bool, 2)
	ch.OnFlow(func(active bool) { flows <- active })

	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.ChannelFlow{Active: false}))
	_, ok := amqptest.Expect[*amqp.ChannelFlowOk](t, sc)
	require.False(t, ok.Active, "the client acknowledges the pause")
	require.False(t, <-flows)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("paused")})
	require.ErrorIs(t, err, context.DeadlineExceeded, "publishing waits while the server paused the channel")

	done := make(chan error, 1)
	go func() {
		_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q", Body: []byte("resumed")})
		done <- err
	}()
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.ChannelFlow{Active: true}))
	_, ok = amqptest.Expect[*amqp.ChannelFlowOk](t, sc)
	require.True(t, ok.Active)
	require.True(t, <-flows)
	require.NoError(t, <-done)
	require.Equal(t, "resumed", string(amqptest.ExpectPublish(t, sc).Body), "the timed-out publish was never sent")
}

func TestConsumerBufferLimitPausesReader(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	other := openFakeChannel(t, conn, sc)
	consumed := make(chan *amqp.Consumer, 1)
	go func() {
		c, err := ch.ConsumeWith(t.Context(), amqp.BasicConsume{Queue: "q", ConsumerTag: "c", NoAck: true},
			amqp.ConsumerOptions{BufferLimit: 5})
		require.NoError(t, err)
		consumed <- c
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: "c"}))
	cons := <-consumed

	// 20 deliveries, then a reply on another channel. The reader stops after
	// the 5th delivery fills the buffer, so the reply is not read yet.
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 20, amqp.Properties{}, []byte("m")))
	declared := make(chan error, 1)
	go func() {
		_, err := other.QueueDeclare(t.Context(), amqp.QueueDeclare{Queue: "x"})
		declared <- err
	}()
	amqptest.Expect[*amqp.QueueDeclare](t, sc)
	// net.Pipe has no socket buffer: the write completes only when the
	// paused reader reads again.
	sent := make(chan error, 1)
	go func() { sent <- sc.Send(t.Context(), other.ID(), &amqp.QueueDeclareOk{Queue: "x"}) }()
	select {
	case err := <-declared:
		t.Fatalf("the reader went past a full consumer buffer (declare returned %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	require.True(t, conn.IsAlive(), "the pause is ours: it does not count as server silence")

	// Draining the consumer lets the reader go on: every delivery arrives, in order.
	for i := range 20 {
		d, err := cons.Next(t.Context())
		require.NoError(t, err)
		require.Equal(t, uint64(i+1), d.DeliveryTag)
	}
	require.NoError(t, <-sent)
	require.NoError(t, <-declared)
}

func TestChannelMaxExhausted(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{ChannelMax: 3, Handler: amqptest.AutoReply})
	conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
	require.NoError(t, err)
	defer conn.Close(t.Context())
	require.Equal(t, uint16(3), conn.ChannelMax())
	var chans []*amqp.Channel
	for range 3 {
		ch, err := conn.Channel(t.Context())
		require.NoError(t, err)
		require.LessOrEqual(t, ch.ID(), uint16(3))
		chans = append(chans, ch)
	}
	_, err = conn.Channel(t.Context())
	require.ErrorIs(t, err, amqp.ErrNoFreeChannel)
	require.NoError(t, chans[1].Close(t.Context()))
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err, "a closed channel's number is free again")
	require.Equal(t, chans[1].ID(), ch.ID())
}

// TestPublishAllocatesNothing guards the publish path's cost: a publish
// outside confirm mode allocates nothing (the benchmarks measure the rest).
func TestPublishAllocatesNothing(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	ctx, cancel := context.WithCancel(t.Context())
	sunk := make(chan struct{})
	go func() { defer close(sunk); sc.Sink(ctx) }()
	t.Cleanup(func() { cancel(); <-sunk })
	msg := amqp.Publishing{RoutingKey: "q", Properties: amqp.Properties{ContentType: "text/plain"}, Body: make([]byte, 16)}
	allocs := leastAllocsPerRun(1000, func() {
		if _, err := ch.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}
