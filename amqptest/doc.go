// Package amqptest is a fake AMQP 0-9-1 server for frame-level tests of
// code that uses an AMQP client: a scriptable peer in the spirit of
// franz-go's kfake and pgx's pgmock, not a broker. It keeps no queues and
// routes nothing; the test decides what the server says, down to the byte.
//
// A [Server] accepts connections on a loopback TCP listener ([Server.URL])
// and through net.Pipe ([Server.Dial], which fits amqp.Config.Dial and works
// inside a testing/synctest bubble). It runs the opening handshake of each
// connection by itself, as [Options] configure it (server properties, SASL
// mechanisms, tune values, refusing credentials or vhosts), and hands the
// connection to [Server.Accept] as a [Conn]. The test then scripts the
// conversation:
//
//   - [Expect] and [ExpectPublish] read the next method (with its content)
//     and fail the test if it is not the one expected; [Conn.ReadCommand] and
//     [Conn.ReadFrame] read without judging.
//   - [Conn.Send] and [Conn.SendContent] write methods and messages;
//     [Conn.CloseChannel] and [Conn.CloseConnection] close the way a broker
//     does after an error; [Conn.SendHeartbeat], [Conn.WriteRaw] and
//     [Conn.Drop] cover heartbeats, hostile bytes and lost connections. A
//     test that stops reading makes the client's writes back up.
//   - [Conn.Serve] with [AutoReply], or Options.Handler for every
//     connection, answers the routine methods (channel.open, queue.declare,
//     confirm.select with acks, ...) so that a test scripts only what it is
//     about: a Handler intercepts some methods and passes the others on.
//   - [Conn.Sink] and [Conn.Deliver] are the far ends of a publisher and of a
//     consumer, for benchmarks.
//
// # Errors
//
// Methods that read or write take a context and return an error. The
// package-level helpers [Expect] and [ExpectPublish] take a testing.TB
// instead and end the test with Fatalf (so call them from the test's
// goroutine), each bounded by Options.ExpectTimeout. A Server made with a
// testing.TB is closed by the test's cleanup, which waits for every goroutine
// the package started.
//
// # A scripted test
//
// The client's calls wait for the server, so they run in a goroutine while
// the test's goroutine plays the server. This test checks how a client
// reports a queue.declare refused with 403 ACCESS_REFUSED:
//
//	func TestDeclareRefused(t *testing.T) {
//		ctx := t.Context()
//		srv := amqptest.NewServer(t, amqptest.Options{})
//		conn, err := amqp.DialConfig(ctx, amqp.Config{Dial: srv.Dial})
//		if err != nil {
//			t.Fatal(err)
//		}
//		sc, err := srv.Accept(ctx) // the handshake is done
//		if err != nil {
//			t.Fatal(err)
//		}
//
//		errc := make(chan error, 1)
//		go func() {
//			ch, err := conn.Channel(ctx)
//			if err == nil {
//				_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "jobs", Durable: true})
//			}
//			errc <- err
//		}()
//
//		ch, _ := amqptest.Expect[*amqp.ChannelOpen](t, sc)
//		if err := sc.Send(ctx, ch, &amqp.ChannelOpenOk{}); err != nil {
//			t.Fatal(err)
//		}
//		ch, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc)
//		if qd.Queue != "jobs" || !qd.Durable {
//			t.Errorf("declared %+v", qd)
//		}
//		err = sc.CloseChannel(ctx, ch, amqp.CodeAccessRefused, "ACCESS_REFUSED - no permission", qd)
//		if err != nil {
//			t.Fatal(err)
//		}
//		if err := <-errc; !errors.Is(err, amqp.ErrAccessRefused) {
//			t.Errorf("QueueDeclare: %v, want ACCESS_REFUSED", err)
//		}
//
//		// The rest of the conversation is routine.
//		go sc.Serve(ctx, amqptest.AutoReply)
//		if err := conn.Close(ctx); err != nil {
//			t.Error(err)
//		}
//	}
//
// # A cooperative server
//
// With Options.Handler set to [AutoReply], every connection is served in the
// background, and a test of code that publishes with confirms needs no
// script at all. To check what was published, wrap AutoReply:
//
//	published := make(chan string, 10)
//	srv := amqptest.NewServer(t, amqptest.Options{
//		Handler: func(ctx context.Context, c *amqptest.Conn, cmd *amqptest.Command) error {
//			if _, ok := cmd.Method.(*amqp.BasicPublish); ok {
//				published <- string(cmd.Body)
//			}
//			return amqptest.AutoReply(ctx, c, cmd) // acks it in confirm mode
//		},
//	})
//	runTheCodeUnderTest(srv.URL())
//
// # Virtual time
//
// Created inside a testing/synctest bubble and dialed with [Server.Dial],
// the server runs entirely in the bubble: heartbeats, timeouts and
// Options.ExpectTimeout use the bubble's clock, so tests of heartbeat
// timeouts take no real time, and an Expect that waits for a client that
// is stuck fails at once instead of after the timeout. The TCP listener,
// which does not work in a bubble, opens only when Addr or URL is called.
package amqptest
