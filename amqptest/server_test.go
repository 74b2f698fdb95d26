package amqptest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// dialers run a test over both kinds of connection.
var dialers = []struct {
	name string
	dial func(testing.TB, *amqptest.Server) *rawClient
}{
	{"pipe", dialPipe},
	{"tcp", dialTCP},
}

func TestHandshake(t *testing.T) {
	for _, d := range dialers {
		t.Run(d.name, func(t *testing.T) {
			props := amqp.Table{"product": "FakeMQ", "capabilities": amqp.Table{"basic.nack": true}}
			srv := amqptest.NewServer(t, amqptest.Options{
				ServerProperties: props,
				Mechanisms:       "PLAIN",
				Locales:          "en_US fr_FR",
				ChannelMax:       100,
				FrameMax:         8192,
				Heartbeat:        30,
			})
			c := d.dial(t, srv)
			start := c.handshake(handshake{heartbeat: 10, vhost: "prod"})
			if start.VersionMajor != 0 || start.VersionMinor != 9 || start.Mechanisms != "PLAIN" ||
				start.Locales != "en_US fr_FR" || start.ServerProperties["product"] != "FakeMQ" {
				t.Errorf("connection.start = %+v", start)
			}

			sc := accept(t, srv)
			if so := sc.StartOk(); so == nil || so.Mechanism != "PLAIN" || so.Response != "\x00guest\x00guest" ||
				so.ClientProperties["product"] != "rawClient" {
				t.Errorf("StartOk() = %+v", so)
			}
			if to := sc.TuneOk(); to == nil || *to != (amqp.ConnectionTuneOk{ChannelMax: 100, FrameMax: 8192, Heartbeat: 10}) {
				t.Errorf("TuneOk() = %+v", to)
			}
			if o := sc.Open(); o == nil || o.VirtualHost != "prod" {
				t.Errorf("Open() = %+v", o)
			}
			if sc.FrameMax() != 8192 || sc.Heartbeat() != 10*time.Second {
				t.Errorf("FrameMax, Heartbeat = %d, %v", sc.FrameMax(), sc.Heartbeat())
			}
			if sc.HandshakeErr() != nil {
				t.Errorf("HandshakeErr() = %v", sc.HandshakeErr())
			}
		})
	}
}

func TestServerDefaults(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{})
	c := dialPipe(t, srv)
	c.write(amqp.ProtocolHeader[:])
	_, start := expectClient[*amqp.ConnectionStart](c)
	caps, _ := start.ServerProperties["capabilities"].(amqp.Table)
	if start.ServerProperties["product"] != "RabbitMQ" || caps["publisher_confirms"] != true ||
		start.Mechanisms != amqptest.DefaultMechanisms || start.Locales != amqptest.DefaultLocales {
		t.Errorf("connection.start = %+v", start)
	}
	c.send(0, &amqp.ConnectionStartOk{Mechanism: "AMQPLAIN", Response: amqplain(t, "u", "p"), Locale: "en_US"})
	_, tune := expectClient[*amqp.ConnectionTune](c)
	if *tune != (amqp.ConnectionTune{ChannelMax: amqptest.DefaultChannelMax, FrameMax: amqptest.DefaultFrameMax}) {
		t.Errorf("connection.tune = %+v", tune)
	}
	if !strings.HasPrefix(srv.URL(), "amqp://guest:guest@127.0.0.1:") || !strings.HasSuffix(srv.URL(), "/") {
		t.Errorf("URL() = %q", srv.URL())
	}
}

// amqplain encodes an AMQPLAIN response as the client engine does.
func amqplain(t testing.TB, user, pass string) string {
	b, _, err := amqp.AMQPlainAuth{Username: user, Password: pass}.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCredentials(t *testing.T) {
	for _, tc := range []struct {
		mechanism, response string
		user, pass          string
		ok                  bool
	}{
		{"PLAIN", "\x00alice\x00secret", "alice", "secret", true},
		{"PLAIN", "admin\x00alice\x00s\x01cret", "alice", "s\x01cret", true},
		{"PLAIN", "alice", "", "", false},
		{"AMQPLAIN", amqplain(t, "bob", "pa:ss"), "bob", "pa:ss", true},
		{"AMQPLAIN", "garbage", "", "", false},
		{"EXTERNAL", "", "", "", false},
	} {
		user, pass, err := amqptest.Credentials(tc.mechanism, tc.response)
		if (err == nil) != tc.ok || user != tc.user || pass != tc.pass {
			t.Errorf("Credentials(%q, %q) = %q, %q, %v", tc.mechanism, tc.response, user, pass, err)
		}
	}
}

func TestHandshakeRefusals(t *testing.T) {
	errBadPassword := errors.New("Login was refused using authentication mechanism PLAIN")
	checkAuth := func(mechanism, response string) error {
		if user, pass, err := amqptest.Credentials(mechanism, response); err != nil || user != "guest" || pass != "guest" {
			return errBadPassword
		}
		return nil
	}
	checkVhost := func(vhost string) error {
		if vhost != "/" {
			return fmt.Errorf("vhost %s not found", vhost)
		}
		return nil
	}
	opts := amqptest.Options{CheckAuth: checkAuth, CheckVhost: checkVhost, FrameMax: 65536, ChannelMax: 10}

	// expectClose reads the server's connection.close, answers close-ok and
	// waits for the socket to close.
	expectClose := func(t *testing.T, c *rawClient, code amqp.ReplyCode, text string) *amqp.ConnectionClose {
		t.Helper()
		_, cl := expectClient[*amqp.ConnectionClose](c)
		if cl.ReplyCode != code || cl.ReplyText != text {
			t.Errorf("connection.close = %d %q, want %d %q", cl.ReplyCode, cl.ReplyText, code, text)
		}
		c.send(0, &amqp.ConnectionCloseOk{})
		c.expectEOF()
		return cl
	}

	t.Run("bad password, authentication_failure_close", func(t *testing.T) {
		srv := amqptest.NewServer(t, opts)
		c := dialPipe(t, srv)
		c.write(amqp.ProtocolHeader[:])
		c.startOk(handshake{response: "\x00guest\x00wrong"})
		expectClose(t, c, amqp.CodeAccessRefused, "ACCESS_REFUSED - "+errBadPassword.Error())
		sc, err := srv.Accept(ctxT(t))
		if !errors.Is(err, errBadPassword) || sc == nil || sc.StartOk() == nil || sc.TuneOk() != nil {
			t.Errorf("Accept() = %v, %v", sc, err)
		}
	})
	t.Run("bad password, no capability", func(t *testing.T) {
		srv := amqptest.NewServer(t, opts)
		c := dialPipe(t, srv)
		c.write(amqp.ProtocolHeader[:])
		c.startOk(handshake{response: "\x00guest\x00wrong", caps: amqp.Table{}})
		c.expectEOF()
		if _, err := srv.Accept(ctxT(t)); !errors.Is(err, errBadPassword) {
			t.Errorf("Accept() error = %v", err)
		}
	})
	t.Run("unknown mechanism", func(t *testing.T) {
		srv := amqptest.NewServer(t, opts)
		c := dialPipe(t, srv)
		c.write(amqp.ProtocolHeader[:])
		c.startOk(handshake{mechanism: "EXTERNAL"})
		expectClose(t, c, amqp.CodeCommandInvalid, "COMMAND_INVALID - unknown authentication mechanism 'EXTERNAL'")
	})
	t.Run("vhost", func(t *testing.T) {
		srv := amqptest.NewServer(t, opts)
		c := dialPipe(t, srv)
		c.write(amqp.ProtocolHeader[:])
		c.startOk(handshake{})
		_, tune := expectClient[*amqp.ConnectionTune](c)
		c.tuneOk(handshake{}, tune)
		c.openVhost(handshake{vhost: "nope"})
		cl := expectClose(t, c, amqp.CodeNotAllowed, "NOT_ALLOWED - vhost nope not found")
		if cl.FailingClassID != 10 || cl.FailingMethodID != 40 {
			t.Errorf("failing method = %d.%d, want 10.40", cl.FailingClassID, cl.FailingMethodID)
		}
		sc, err := srv.Accept(ctxT(t))
		if err == nil || sc.Open() == nil || sc.Open().VirtualHost != "nope" {
			t.Errorf("Accept() = %v, %v", sc, err)
		}
	})
	for _, tc := range []struct {
		name string
		h    handshake
		text string
	}{
		{"frame_max too large", handshake{frameMax: 65537}, "NOT_ALLOWED - frame_max=65537 > 65536 max size"},
		{"frame_max too small", handshake{frameMax: 4095}, "NOT_ALLOWED - frame_max=4095 < 4096 min size"},
		{"channel_max too large", handshake{channelMax: 11},
			"NOT_ALLOWED - negotiated channel_max = 11 is higher than the maximum allowed value (10)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := amqptest.NewServer(t, opts)
			c := dialPipe(t, srv)
			c.write(amqp.ProtocolHeader[:])
			c.startOk(handshake{})
			_, tune := expectClient[*amqp.ConnectionTune](c)
			c.tuneOk(tc.h, tune)
			expectClose(t, c, amqp.CodeNotAllowed, tc.text)
		})
	}
	t.Run("protocol version", func(t *testing.T) {
		srv := amqptest.NewServer(t, opts)
		c := dialPipe(t, srv)
		c.write([]byte("AMQP\x01\x01\x00\x0a"))
		var hdr [8]byte
		if _, err := io.ReadFull(c.nc, hdr[:]); err != nil || hdr != amqp.ProtocolHeader {
			t.Errorf("server answered %q, %v", hdr[:], err)
		}
		c.expectEOF()
		if _, err := srv.Accept(ctxT(t)); err == nil || !strings.Contains(err.Error(), "protocol header") {
			t.Errorf("Accept() error = %v", err)
		}
	})
	t.Run("unexpected method", func(t *testing.T) {
		srv := amqptest.NewServer(t, opts)
		c := dialPipe(t, srv)
		c.write(amqp.ProtocolHeader[:])
		expectClient[*amqp.ConnectionStart](c)
		c.send(1, &amqp.ChannelOpen{})
		cl := expectClose(t, c, amqp.CodeCommandInvalid,
			"COMMAND_INVALID - expected connection.start-ok, got channel.open on channel 1")
		if cl.FailingClassID != 20 || cl.FailingMethodID != 10 {
			t.Errorf("failing method = %d.%d", cl.FailingClassID, cl.FailingMethodID)
		}
	})
	t.Run("client hangs up", func(t *testing.T) {
		srv := amqptest.NewServer(t, opts)
		c := dialPipe(t, srv)
		c.write(amqp.ProtocolHeader[:])
		expectClient[*amqp.ConnectionStart](c)
		c.nc.Close()
		if _, err := srv.Accept(ctxT(t)); !errors.Is(err, io.EOF) {
			t.Errorf("Accept() error = %v, want io.EOF", err)
		}
	})
}

func TestManualHandshake(t *testing.T) {
	t.Run("version mismatch", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		c := dialPipe(t, srv)
		sc := accept(t, srv) // before the client sent anything
		ctx := ctxT(t)
		c.write(amqp.ProtocolHeader[:])
		hdr, err := sc.ReadProtocolHeader(ctx)
		if err != nil || hdr != amqp.ProtocolHeader {
			t.Fatalf("ReadProtocolHeader() = %q, %v", hdr[:], err)
		}
		go func() { // net.Pipe: the write waits for the client's read
			_ = sc.WriteRaw(ctx, []byte("AMQP\x01\x01\x00\x0a"))
			sc.Drop()
		}()
		var got [8]byte
		if _, err := io.ReadFull(c.nc, got[:]); err != nil || string(got[:]) != "AMQP\x01\x01\x00\x0a" {
			t.Errorf("client read %q, %v", got[:], err)
		}
		c.expectEOF()
	})
	t.Run("secure challenge", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		c := dialPipe(t, srv)
		sc := accept(t, srv)
		ctx := ctxT(t)
		c.write(amqp.ProtocolHeader[:])
		c.startReading()
		if _, err := sc.ReadProtocolHeader(ctx); err != nil {
			t.Fatal(err)
		}
		must(t, sc.Send(ctx, 0, &amqp.ConnectionStart{VersionMinor: 9, Mechanisms: "CR-DEMO", Locales: "en_US"}))
		expectClient[*amqp.ConnectionStart](c)
		c.send(0, &amqp.ConnectionStartOk{Mechanism: "CR-DEMO", Response: "alice", Locale: "en_US"})
		_, so := amqptest.Expect[*amqp.ConnectionStartOk](t, sc)
		if so.Response != "alice" || sc.StartOk() != so {
			t.Errorf("start-ok = %+v", so)
		}
		must(t, sc.Send(ctx, 0, &amqp.ConnectionSecure{Challenge: "nonce"}))
		_, sec := expectClient[*amqp.ConnectionSecure](c)
		c.send(0, &amqp.ConnectionSecureOk{Response: sec.Challenge + ":proof"})
		if _, sok := amqptest.Expect[*amqp.ConnectionSecureOk](t, sc); sok.Response != "nonce:proof" {
			t.Errorf("secure-ok = %+v", sok)
		}
		// Propose "no limit" for channels and frames, which Options cannot.
		must(t, sc.Send(ctx, 0, &amqp.ConnectionTune{}))
		expectClient[*amqp.ConnectionTune](c)
		c.send(0, &amqp.ConnectionTuneOk{ChannelMax: 65535, FrameMax: 1 << 20})
		amqptest.Expect[*amqp.ConnectionTuneOk](t, sc)
		if sc.FrameMax() != 1<<20 {
			t.Errorf("FrameMax() = %d", sc.FrameMax())
		}
		c.openVhost(handshake{})
		amqptest.Expect[*amqp.ConnectionOpen](t, sc)
		// Refuse after open, as a node under maintenance would.
		go c.send(0, &amqp.ConnectionCloseOk{}) // answer ahead: the raw client has no reader of its own
		_ = sc.CloseConnection(ctx, amqp.CodeConnectionForced, "CONNECTION_FORCED - maintenance", nil)
		_, cl := expectClient[*amqp.ConnectionClose](c)
		if cl.ReplyCode != amqp.CodeConnectionForced {
			t.Errorf("connection.close = %+v", cl)
		}
	})
	t.Run("Handshake", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		c := dialPipe(t, srv)
		sc := accept(t, srv)
		errc := make(chan error, 1)
		go func() { errc <- sc.Handshake(ctxT(t)) }()
		c.handshake(handshake{})
		must(t, <-errc)
		if sc.HandshakeErr() != nil || sc.Open() == nil {
			t.Errorf("after Handshake: %v, %v", sc.HandshakeErr(), sc.Open())
		}
	})
	t.Run("read before header", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		dialPipe(t, srv)
		sc := accept(t, srv)
		if _, err := sc.ReadCommand(ctxT(t)); err == nil || !strings.Contains(err.Error(), "protocol header") {
			t.Errorf("ReadCommand() error = %v", err)
		}
	})
}

// ready returns a raw client after a successful default handshake and the
// server's side of it.
func ready(t *testing.T, opts amqptest.Options, dial func(testing.TB, *amqptest.Server) *rawClient, h handshake) (*rawClient, *amqptest.Conn) {
	t.Helper()
	srv := amqptest.NewServer(t, opts)
	c := dial(t, srv)
	c.handshake(h)
	return c, accept(t, srv)
}

func TestScriptedConversation(t *testing.T) {
	for _, d := range dialers {
		t.Run(d.name, func(t *testing.T) {
			c, sc := ready(t, amqptest.Options{FrameMax: 4096}, d.dial, handshake{})
			ctx := ctxT(t)

			c.send(1, &amqp.ChannelOpen{})
			if ch, _ := amqptest.Expect[*amqp.ChannelOpen](t, sc); ch != 1 {
				t.Errorf("channel.open on %d", ch)
			}
			must(t, sc.Send(ctx, 1, &amqp.ChannelOpenOk{}))
			expectClient[*amqp.ChannelOpenOk](c)

			c.send(1, &amqp.QueueDeclare{Queue: "jobs", Durable: true, Arguments: amqp.Table{"x-queue-type": "quorum"}})
			ch, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc)
			if ch != 1 || qd.Queue != "jobs" || !qd.Durable || qd.Arguments["x-queue-type"] != "quorum" {
				t.Errorf("queue.declare = %d %+v", ch, qd)
			}
			must(t, sc.Send(ctx, ch, &amqp.QueueDeclareOk{Queue: "jobs", MessageCount: 7}))
			if _, ok := expectClient[*amqp.QueueDeclareOk](c); ok.MessageCount != 7 {
				t.Errorf("declare-ok = %+v", ok)
			}

			// A publish whose body spans several frames, without confirms.
			body := bytes.Repeat([]byte("0123456789"), 1000)
			props := amqp.Properties{ContentType: "text/plain", DeliveryMode: 2, Headers: amqp.Table{"k": "v"}}
			c.publish(1, &amqp.BasicPublish{RoutingKey: "jobs", Mandatory: true}, props, body)
			pub := amqptest.ExpectPublish(t, sc)
			if pub.Channel != 1 || pub.Method.RoutingKey != "jobs" || !pub.Method.Mandatory || pub.ConfirmTag != 0 ||
				!bytes.Equal(pub.Body, body) || pub.Properties.ContentType != "text/plain" ||
				pub.Properties.DeliveryMode != 2 || pub.Properties.Headers["k"] != "v" {
				t.Errorf("publish = %+v", pub)
			}

			// Confirm mode numbers the publishes.
			c.send(1, &amqp.ConfirmSelect{})
			amqptest.Expect[*amqp.ConfirmSelect](t, sc)
			must(t, sc.Send(ctx, 1, &amqp.ConfirmSelectOk{}))
			expectClient[*amqp.ConfirmSelectOk](c)
			for i := uint64(1); i <= 3; i++ {
				c.publish(1, &amqp.BasicPublish{RoutingKey: "jobs"}, amqp.Properties{}, nil)
				if pub := amqptest.ExpectPublish(t, sc); pub.ConfirmTag != i || len(pub.Body) != 0 {
					t.Errorf("publish %d: %+v", i, pub)
				}
			}
			must(t, sc.Send(ctx, 1, &amqp.BasicAck{DeliveryTag: 3, Multiple: true}))
			expectClient[*amqp.BasicAck](c)

			// A delivery split to fit frame_max.
			must(t, sc.SendContent(ctx, 1, &amqp.BasicDeliver{ConsumerTag: "ct", DeliveryTag: 1, RoutingKey: "jobs"}, props, body))
			if _, dl := expectClient[*amqp.BasicDeliver](c); dl.ConsumerTag != "ct" || dl.DeliveryTag != 1 {
				t.Errorf("deliver = %+v", dl)
			}
			if p, b := c.content(); !bytes.Equal(b, body) || p.ContentType != "text/plain" {
				t.Errorf("delivered %d bytes, %+v", len(b), p)
			}

			// Closing channel 1 discards its frames until close-ok but keeps
			// the other channels' frames.
			c.send(2, &amqp.ChannelOpen{})
			c.publish(1, &amqp.BasicPublish{RoutingKey: "discarded"}, amqp.Properties{}, []byte("x"))
			c.send(2, &amqp.BasicQos{PrefetchCount: 10})
			c.send(1, &amqp.ChannelCloseOk{})
			must(t, sc.CloseChannel(ctx, 1, amqp.CodeNotFound, "NOT_FOUND - no exchange 'x'", &amqp.BasicPublish{}))
			_, cl := expectClient[*amqp.ChannelClose](c)
			if cl.ReplyCode != amqp.CodeNotFound || cl.FailingClassID != 60 || cl.FailingMethodID != 40 {
				t.Errorf("channel.close = %+v", cl)
			}
			if ch, _ := amqptest.Expect[*amqp.ChannelOpen](t, sc); ch != 2 {
				t.Errorf("channel.open on %d", ch)
			}
			if ch, qos := amqptest.Expect[*amqp.BasicQos](t, sc); ch != 2 || qos.PrefetchCount != 10 {
				t.Errorf("basic.qos = %d %+v", ch, qos)
			}

			// A reopened channel starts over: no confirm mode.
			c.send(1, &amqp.ChannelOpen{})
			amqptest.Expect[*amqp.ChannelOpen](t, sc)
			c.publish(1, &amqp.BasicPublish{}, amqp.Properties{}, nil)
			if pub := amqptest.ExpectPublish(t, sc); pub.ConfirmTag != 0 {
				t.Errorf("ConfirmTag after reopening = %d", pub.ConfirmTag)
			}

			// Closing the connection.
			c.send(0, &amqp.ConnectionCloseOk{})
			must(t, sc.CloseConnection(ctx, amqp.CodeConnectionForced, "CONNECTION_FORCED - bye", nil))
			expectClient[*amqp.ConnectionClose](c)
			c.expectEOF()
			if _, err := sc.ReadCommand(ctx); !errors.Is(err, net.ErrClosed) {
				t.Errorf("ReadCommand after CloseConnection: %v", err)
			}
			if err := sc.Send(ctx, 0, &amqp.ConnectionCloseOk{}); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Send after CloseConnection: %v", err)
			}
		})
	}
}

func TestCrossingCloses(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	ctx := ctxT(t)
	// The client closes channel 3 while the server does.
	c.send(3, &amqp.ChannelClose{ReplyCode: 200})
	must(t, sc.CloseChannel(ctx, 3, amqp.CodePreconditionFailed, "PRECONDITION_FAILED", nil))
	expectClient[*amqp.ChannelClose](c)
	expectClient[*amqp.ChannelCloseOk](c)
	// And the connection.
	c.send(0, &amqp.ConnectionClose{ReplyCode: 200})
	must(t, sc.CloseConnection(ctx, amqp.CodeInternalError, "INTERNAL_ERROR", nil))
	expectClient[*amqp.ConnectionClose](c)
	expectClient[*amqp.ConnectionCloseOk](c)
	c.expectEOF()
}

func TestInterleavedContent(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	ctx := ctxT(t)
	one := contentFrames(t, 1, &amqp.BasicPublish{RoutingKey: "one"}, amqp.Properties{}, bytes.Repeat([]byte{1}, 5000), 4096)
	two := contentFrames(t, 2, &amqp.BasicPublish{RoutingKey: "two"}, amqp.Properties{}, []byte("2"), 4096)
	f1, f2 := splitFrames(one), splitFrames(two)
	if len(f1) != 4 || len(f2) != 3 {
		t.Fatalf("frames: %d, %d", len(f1), len(f2))
	}
	var all []byte
	for _, f := range [][]byte{f1[0], f2[0], f1[1], f1[2], f2[1], f2[2], f1[3]} {
		all = append(all, f...)
	}
	all = append(all, amqp.AppendHeartbeatFrame(nil)...)
	c.write(all)
	for _, want := range []string{"two", "one"} {
		cmd, err := sc.ReadCommand(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pub, ok := cmd.Method.(*amqp.BasicPublish); !ok || pub.RoutingKey != want {
			t.Errorf("got %v, want the publish to %q", cmd, want)
		}
	}
	if got := (&amqptest.Command{Channel: 2, Method: &amqp.BasicPublish{RoutingKey: "two"}, Body: []byte("2")}).String(); !strings.Contains(got, "basic.publish") || !strings.Contains(got, "1-byte body") {
		t.Errorf("String() = %q", got)
	}
}

// splitFrames splits encoded frames.
func splitFrames(b []byte) (frames [][]byte) {
	for len(b) > 0 {
		n := 7 + int(binary.BigEndian.Uint32(b[3:7])) + 1
		frames, b = append(frames, b[:n]), b[n:]
	}
	return frames
}

func TestOutOfOrderFrames(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	ctx := ctxT(t)
	pub := splitFrames(contentFrames(t, 1, &amqp.BasicPublish{}, amqp.Properties{}, []byte("body"), 4096))
	for _, tc := range []struct {
		name  string
		bytes []byte
		err   string
	}{
		{"body without header", amqp.AppendBodyFrames(nil, 1, []byte("x"), 0), "unexpected body frame"},
		{"header without method", pub[1], "unexpected content header frame"},
		{"method inside content", slices.Concat(pub[0], pub[0]), "arrived before the content of basic.publish was complete"},
		{"unknown method", []byte{1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE}, "unknown method"},
	} {
		c.write(tc.bytes)
		if _, err := sc.ReadCommand(ctx); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: ReadCommand() error = %v, want %q", tc.name, err, tc.err)
		}
	}
	// The connection still works.
	c.send(1, &amqp.BasicQos{})
	amqptest.Expect[*amqp.BasicQos](t, sc)
}

func TestReadFrame(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	ctx := ctxT(t)
	c.write(amqp.AppendHeartbeatFrame(nil))
	c.send(5, &amqp.QueueDeclare{Queue: "first"})
	c.send(5, &amqp.QueueDeclare{Queue: "second"})
	hb, err := sc.ReadFrame(ctx)
	if err != nil || hb.Type != amqp.FrameHeartbeat || len(hb.Payload) != 0 {
		t.Fatalf("ReadFrame() = %+v, %v", hb, err)
	}
	first, err := sc.ReadFrame(ctx)
	if err != nil || first.Type != amqp.FrameMethod || first.Channel != 5 {
		t.Fatalf("ReadFrame() = %+v, %v", first, err)
	}
	kept := bytes.Clone(first.Payload)
	if _, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc); qd.Queue != "second" {
		t.Errorf("second = %+v", qd)
	}
	if !bytes.Equal(first.Payload, kept) {
		t.Error("a frame from ReadFrame changed after the next read")
	}
	if m, err := amqp.DecodeMethod(first.Payload); err != nil || m.(*amqp.QueueDeclare).Queue != "first" {
		t.Errorf("decoded %v, %v", m, err)
	}
}

func TestContextCancel(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	frames := contentFrames(t, 1, &amqp.BasicPublish{RoutingKey: "r"}, amqp.Properties{}, []byte("hello"), 4096)

	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := sc.ReadCommand(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadCommand() error = %v, want DeadlineExceeded", err)
	}
	// Half a content, then a timeout: the next read resumes it.
	c.write(frames[:len(frames)-13])
	short, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := sc.ReadCommand(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadCommand() error = %v, want DeadlineExceeded", err)
	}
	c.write(frames[len(frames)-13:])
	if pub := amqptest.ExpectPublish(t, sc); string(pub.Body) != "hello" {
		t.Errorf("body = %q", pub.Body)
	}
	// A canceled context fails at once, even with a frame waiting.
	c.send(1, &amqp.BasicQos{})
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := sc.ReadCommand(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadCommand(canceled) error = %v", err)
	}
	if err := sc.Send(canceled, 1, &amqp.BasicQosOk{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send(canceled) error = %v", err)
	}
	amqptest.Expect[*amqp.BasicQos](t, sc)
}

func TestWriteDeadline(t *testing.T) {
	// The raw client does not read: the server's writes back up, and the
	// context ends them. Nothing was written, so the connection stays usable.
	srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
	c := dialPipe(t, srv)
	sc := accept(t, srv)
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := sc.SendHeartbeat(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendHeartbeat() error = %v", err)
	}
	must(t, sc.WriteRaw(ctxT(t), nil)) // nothing to write: no wait
	errc := make(chan error, 1)
	go func() { errc <- sc.SendHeartbeat(ctxT(t)) }()
	if f, err := c.next(); err != nil || f.Type != amqp.FrameHeartbeat {
		t.Errorf("client read %+v, %v", f, err)
	}
	must(t, <-errc)
}

func TestHostileFrames(t *testing.T) {
	t.Run("server sends", func(t *testing.T) {
		c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
		frame, _ := amqp.AppendMethodFrame(nil, 1, &amqp.ChannelOpenOk{})
		frame[len(frame)-1] = 0xAB
		must(t, sc.WriteRaw(ctxT(t), frame))
		if _, err := c.next(); !errors.Is(err, amqp.ErrMalformedFrame) {
			t.Errorf("client read error = %v, want ErrMalformedFrame", err)
		}
	})
	t.Run("client sends bad end octet", func(t *testing.T) {
		c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
		frame, _ := amqp.AppendMethodFrame(nil, 1, &amqp.ChannelOpen{})
		frame[len(frame)-1] = 0
		c.write(frame)
		_, err := sc.ReadCommand(ctxT(t))
		if !errors.Is(err, amqp.ErrMalformedFrame) {
			t.Errorf("ReadCommand() error = %v, want ErrMalformedFrame", err)
		}
		if _, err2 := sc.ReadFrame(ctxT(t)); !errors.Is(err2, amqp.ErrMalformedFrame) {
			t.Errorf("the error is not sticky: %v", err2)
		}
		if err := sc.WaitClosed(ctxT(t)); !errors.Is(err, amqp.ErrMalformedFrame) {
			t.Errorf("WaitClosed() = %v", err)
		}
	})
	t.Run("client exceeds frame_max", func(t *testing.T) {
		c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{frameMax: 4096})
		c.write(amqp.AppendBodyFrames(nil, 1, make([]byte, 4096), 0))
		if _, err := sc.ReadCommand(ctxT(t)); !errors.Is(err, amqp.ErrFrameTooLarge) {
			t.Errorf("ReadCommand() error = %v, want ErrFrameTooLarge", err)
		}
	})
	t.Run("client body larger than announced", func(t *testing.T) {
		c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
		b, _ := amqp.AppendMethodFrame(nil, 1, &amqp.BasicPublish{})
		b, _ = amqp.AppendHeaderFrame(b, 1, 60, 2, &amqp.Properties{})
		b = amqp.AppendBodyFrames(b, 1, []byte("abc"), 0)
		c.write(b)
		if _, err := sc.ReadCommand(ctxT(t)); err == nil || !strings.Contains(err.Error(), "more than the 2 bytes") {
			t.Errorf("ReadCommand() error = %v", err)
		}
	})
}

func TestLargeBodies(t *testing.T) {
	body := make([]byte, 16<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		name     string
		frameMax uint32
		frames   int
	}{
		{"one frame", 17 << 20, 1},
		{"default frame_max", 0, (16<<20 + amqptest.DefaultFrameMax - 9) / (amqptest.DefaultFrameMax - 8)},
	} {
		for _, d := range dialers {
			t.Run(tc.name+"/"+d.name, func(t *testing.T) {
				c, sc := ready(t, amqptest.Options{FrameMax: tc.frameMax}, d.dial, handshake{})
				ctx := ctxT(t)
				go c.publish(1, &amqp.BasicPublish{RoutingKey: "big"}, amqp.Properties{}, body)
				if pub := amqptest.ExpectPublish(t, sc); !bytes.Equal(pub.Body, body) {
					t.Errorf("published body differs (%d bytes)", len(pub.Body))
				}
				errc := make(chan error, 1)
				go func() {
					errc <- sc.SendContent(ctx, 1, &amqp.BasicDeliver{DeliveryTag: 1}, amqp.Properties{}, body)
				}()
				expectClient[*amqp.BasicDeliver](c)
				f, err := c.next()
				if err != nil || f.Type != amqp.FrameHeader {
					t.Fatalf("header: %+v, %v", f.Type, err)
				}
				var got []byte
				frames := 0
				for len(got) < len(body) {
					f, err := c.next()
					if err != nil || f.Type != amqp.FrameBody {
						t.Fatalf("body: %v, %v", f.Type, err)
					}
					got = append(got, f.Payload...)
					frames++
				}
				must(t, <-errc)
				if frames != tc.frames || !bytes.Equal(got, body) {
					t.Errorf("delivered %d bytes in %d frames, want %d frames", len(got), frames, tc.frames)
				}
				// Deliver takes the large-message path.
				go func() { errc <- sc.Deliver(ctx, 1, "ct", 2, amqp.Properties{}, body) }()
				for tag := uint64(2); tag <= 3; tag++ {
					if _, dl := expectClient[*amqp.BasicDeliver](c); dl.DeliveryTag != tag {
						t.Errorf("delivery tag %d, want %d", dl.DeliveryTag, tag)
					}
					if _, b := c.content(); !bytes.Equal(b, body) {
						t.Error("delivered body differs")
					}
				}
				must(t, <-errc)
			})
		}
	}
}

func TestAutoReply(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{Handler: amqptest.AutoReply})
	c := dialPipe(t, srv)
	c.handshake(handshake{})
	sc := accept(t, srv)
	if sc.StartOk() == nil {
		t.Error("StartOk() = nil on a served connection")
	}

	call := func(ch uint16, m amqp.Method) amqp.Method {
		t.Helper()
		c.send(ch, m)
		gotCh, reply := c.method()
		if gotCh != ch {
			t.Errorf("%s answered on channel %d", m.MethodName(), gotCh)
		}
		return reply
	}
	replies := []struct {
		m    amqp.Method
		want amqp.Method
	}{
		{&amqp.ChannelOpen{}, &amqp.ChannelOpenOk{}},
		{&amqp.ExchangeDeclare{Exchange: "x", Type: "topic"}, &amqp.ExchangeDeclareOk{}},
		{&amqp.ExchangeBind{Destination: "x", Source: "y"}, &amqp.ExchangeBindOk{}},
		{&amqp.ExchangeUnbind{Destination: "x", Source: "y"}, &amqp.ExchangeUnbindOk{}},
		{&amqp.ExchangeDelete{Exchange: "x"}, &amqp.ExchangeDeleteOk{}},
		{&amqp.QueueDeclare{}, &amqp.QueueDeclareOk{Queue: "amq.gen-1"}},
		{&amqp.QueueDeclare{Queue: "q"}, &amqp.QueueDeclareOk{Queue: "q"}},
		{&amqp.QueueBind{Queue: "q", Exchange: "x"}, &amqp.QueueBindOk{}},
		{&amqp.QueueUnbind{Queue: "q", Exchange: "x"}, &amqp.QueueUnbindOk{}},
		{&amqp.QueuePurge{Queue: "q"}, &amqp.QueuePurgeOk{}},
		{&amqp.QueueDelete{Queue: "q"}, &amqp.QueueDeleteOk{}},
		{&amqp.BasicQos{PrefetchCount: 5}, &amqp.BasicQosOk{}},
		{&amqp.BasicConsume{Queue: "q"}, &amqp.BasicConsumeOk{ConsumerTag: "amq.ctag-2"}},
		{&amqp.BasicConsume{Queue: "q", ConsumerTag: "mine"}, &amqp.BasicConsumeOk{ConsumerTag: "mine"}},
		{&amqp.BasicCancel{ConsumerTag: "mine"}, &amqp.BasicCancelOk{ConsumerTag: "mine"}},
		{&amqp.BasicGet{Queue: "q"}, &amqp.BasicGetEmpty{}},
		{&amqp.BasicRecover{Requeue: true}, &amqp.BasicRecoverOk{}},
		{&amqp.ChannelFlow{Active: false}, &amqp.ChannelFlowOk{Active: false}},
		{&amqp.TxSelect{}, &amqp.TxSelectOk{}},
		{&amqp.TxCommit{}, &amqp.TxCommitOk{}},
		{&amqp.TxRollback{}, &amqp.TxRollbackOk{}},
	}
	for _, r := range replies {
		if got := call(1, r.m); fmt.Sprintf("%T%+v", got, got) != fmt.Sprintf("%T%+v", r.want, r.want) {
			t.Errorf("%s: got %s %+v, want %+v", r.m.MethodName(), got.MethodName(), got, r.want)
		}
	}
	// No-wait methods and acks get no answer: the next reply is the update-secret-ok.
	c.send(1, &amqp.QueueDeclare{Queue: "nw", NoWait: true})
	c.send(1, &amqp.BasicAck{DeliveryTag: 1})
	c.publish(1, &amqp.BasicPublish{}, amqp.Properties{}, nil) // not in confirm mode: no ack
	if got := call(0, &amqp.ConnectionUpdateSecret{NewSecret: "s"}); got.MethodName() != "connection.update-secret-ok" {
		t.Errorf("got %s", got.MethodName())
	}
	// Confirm mode acks every publish.
	c.send(2, &amqp.ChannelOpen{})
	expectClient[*amqp.ChannelOpenOk](c)
	call(2, &amqp.ConfirmSelect{})
	for tag := uint64(1); tag <= 3; tag++ {
		c.publish(2, &amqp.BasicPublish{RoutingKey: "r"}, amqp.Properties{}, []byte("m"))
		if ch, ack := expectClient[*amqp.BasicAck](c); ch != 2 || ack.DeliveryTag != tag || ack.Multiple {
			t.Errorf("ack = %d %+v, want tag %d", ch, ack, tag)
		}
	}
	call(2, &amqp.ChannelClose{ReplyCode: 200})
	c.send(0, &amqp.ConnectionClose{ReplyCode: 200})
	expectClient[*amqp.ConnectionCloseOk](c)
	c.expectEOF()
}

func TestAutoReplyError(t *testing.T) {
	// Without a testing.TB, a background handler's error comes back from Close.
	srv := amqptest.NewServer(nil, amqptest.Options{Handler: amqptest.AutoReply})
	t.Cleanup(func() { srv.Close() })
	c := dialPipe(t, srv)
	c.handshake(handshake{})
	c.send(0, &amqp.ConnectionStart{}) // only a server sends that
	_, cl := expectClient[*amqp.ConnectionClose](c)
	if cl.ReplyCode != amqp.CodeInternalError || !strings.Contains(cl.ReplyText, "AutoReply has no answer") {
		t.Errorf("connection.close = %+v", cl)
	}
	c.expectEOF()
	err := srv.Close()
	if err == nil || !strings.Contains(err.Error(), "no answer to the client's channel 0: connection.start") {
		t.Errorf("Close() = %v", err)
	}
}

func TestServeHandler(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	ctx := ctxT(t)
	declared := make(chan string, 10)
	errc := make(chan error, 1)
	go func() {
		errc <- sc.Serve(ctx, func(ctx context.Context, sc *amqptest.Conn, cmd *amqptest.Command) error {
			if qd, ok := cmd.Method.(*amqp.QueueDeclare); ok {
				declared <- qd.Queue
				if qd.Queue == "missing" {
					return sc.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue 'missing'", qd)
				}
			}
			return amqptest.AutoReply(ctx, sc, cmd)
		})
	}()
	c.send(1, &amqp.ChannelOpen{})
	expectClient[*amqp.ChannelOpenOk](c)
	c.send(1, &amqp.QueueDeclare{Queue: "missing", Passive: true})
	_, cl := expectClient[*amqp.ChannelClose](c)
	if cl.ReplyCode != amqp.CodeNotFound || cl.FailingClassID != 50 || cl.FailingMethodID != 10 {
		t.Errorf("channel.close = %+v", cl)
	}
	c.send(1, &amqp.ChannelCloseOk{})
	c.send(1, &amqp.ChannelOpen{})
	expectClient[*amqp.ChannelOpenOk](c)
	c.send(1, &amqp.QueueDeclare{Queue: "present"})
	if _, ok := expectClient[*amqp.QueueDeclareOk](c); ok.Queue != "present" {
		t.Errorf("declare-ok = %+v", ok)
	}
	if a, b := <-declared, <-declared; a != "missing" || b != "present" {
		t.Errorf("declared %q, %q", a, b)
	}
	// The test may write while Serve reads.
	must(t, sc.SendContent(ctx, 1, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, amqp.Properties{}, []byte("hi")))
	expectClient[*amqp.BasicDeliver](c)
	c.content()
	c.send(0, &amqp.ConnectionClose{})
	expectClient[*amqp.ConnectionCloseOk](c)
	if err := <-errc; err != nil {
		t.Errorf("Serve() = %v, want nil once the connection closed", err)
	}
}

func TestSink(t *testing.T) {
	for _, d := range dialers {
		t.Run(d.name, func(t *testing.T) {
			c, sc := ready(t, amqptest.Options{}, d.dial, handshake{})
			type result struct {
				st  amqptest.SinkStats
				err error
			}
			done := make(chan result, 1)
			go func() {
				st, err := sc.Sink(ctxT(t))
				done <- result{st, err}
			}()
			c.send(1, &amqp.ChannelOpen{})
			expectClient[*amqp.ChannelOpenOk](c)
			c.send(1, &amqp.ConfirmSelect{})
			expectClient[*amqp.ConfirmSelectOk](c)
			c.send(2, &amqp.ChannelOpen{})
			expectClient[*amqp.ChannelOpenOk](c)

			const n = 2000
			body := []byte("payload-32-bytes-payload-32-byte")
			one := contentFrames(t, 1, &amqp.BasicPublish{RoutingKey: "q"}, amqp.Properties{}, body, 4096)
			two := contentFrames(t, 2, &amqp.BasicPublish{RoutingKey: "q"}, amqp.Properties{}, body, 4096)
			var batch []byte
			for i := range n {
				batch = append(batch, one...)
				batch = append(batch, two...)
				if i%100 == 99 {
					c.write(batch)
					batch = batch[:0]
				}
			}
			// Read acks until every publish on channel 1 is confirmed.
			var acked uint64
			for acked < n {
				ch, ack := expectClient[*amqp.BasicAck](c)
				if ch != 1 || ack.DeliveryTag <= acked || (!ack.Multiple && ack.DeliveryTag != acked+1) {
					t.Fatalf("ack %+v on channel %d after %d", ack, ch, acked)
				}
				acked = ack.DeliveryTag
			}
			c.send(0, &amqp.ConnectionClose{ReplyCode: 200})
			expectClient[*amqp.ConnectionCloseOk](c)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.st.Publishes != 2*n || r.st.BodyBytes != 2*n*int64(len(body)) || r.st.Frames != 2*n*3+4 {
				t.Errorf("SinkStats = %+v", r.st)
			}
		})
	}
}

func TestDeliver(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	ctx := ctxT(t)
	c.send(1, &amqp.ChannelOpen{})
	amqptest.Expect[*amqp.ChannelOpen](t, sc)
	const n = 5000
	props := amqp.Properties{ContentType: "application/json"}
	errc := make(chan error, 1)
	go func() {
		errc <- sc.Deliver(ctx, 1, "ctag", n, props, []byte(`{"n":1}`))
	}()
	for tag := uint64(1); tag <= n; tag++ {
		ch, dl := expectClient[*amqp.BasicDeliver](c)
		if ch != 1 || dl.DeliveryTag != tag || dl.ConsumerTag != "ctag" {
			t.Fatalf("delivery %d: %d %+v", tag, ch, dl)
		}
		if p, b := c.content(); string(b) != `{"n":1}` || p.ContentType != "application/json" {
			t.Fatalf("delivery %d: %+v %q", tag, p, b)
		}
	}
	must(t, <-errc)
	// A delivery sent by hand moves the counter.
	must(t, sc.SendContent(ctx, 1, &amqp.BasicDeliver{DeliveryTag: 10000}, amqp.Properties{}, nil))
	expectClient[*amqp.BasicDeliver](c)
	c.content()
	must(t, sc.Deliver(ctx, 1, "ctag", 1, amqp.Properties{}, nil))
	if _, dl := expectClient[*amqp.BasicDeliver](c); dl.DeliveryTag != 10001 {
		t.Errorf("delivery tag %d, want 10001", dl.DeliveryTag)
	}
	c.content()
	// Reopening the channel starts over.
	c.send(1, &amqp.ChannelCloseOk{})
	c.send(1, &amqp.ChannelOpen{})
	amqptest.Expect[*amqp.ChannelCloseOk](t, sc)
	amqptest.Expect[*amqp.ChannelOpen](t, sc)
	must(t, sc.Deliver(ctx, 1, "ctag", 1, amqp.Properties{}, nil))
	if _, dl := expectClient[*amqp.BasicDeliver](c); dl.DeliveryTag != 1 {
		t.Errorf("delivery tag %d after reopening, want 1", dl.DeliveryTag)
	}
}

func TestBackpressure(t *testing.T) {
	// A test that stops reading makes the client's writes back up once the
	// read-ahead (about 1 MiB) is full, as a stalled broker would.
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	big := contentFrames(t, 1, &amqp.BasicPublish{}, amqp.Properties{}, make([]byte, 4<<20), 128<<10)
	c.nc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.nc.Write(big); !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		t.Fatalf("client write of 4 MiB to a server that does not read: %v, want a timeout", err)
	}
	_ = sc
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestWaitClosed(t *testing.T) {
	c, sc := ready(t, amqptest.Options{}, dialPipe, handshake{})
	c.send(1, &amqp.ChannelOpen{})
	c.nc.Close()
	must(t, sc.WaitClosed(ctxT(t)))

	srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
	c = dialPipe(t, srv)
	sc = accept(t, srv)
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := sc.WaitClosed(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitClosed() = %v", err)
	}
	c.nc.Close()
	must(t, sc.WaitClosed(ctxT(t)))
}

func TestClose(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last
	srv := amqptest.NewServer(t, amqptest.Options{Heartbeat: 1})

	// A connection in the middle of its handshake.
	silent := dialTCP(t, srv)
	silent.write(amqp.ProtocolHeader[:])
	// A connection blocked in a read, one in Serve with heartbeats, one in Sink.
	var conns []*amqptest.Conn
	for range 3 {
		c := dialPipe(t, srv)
		c.handshake(handshake{})
		c.startReading()
		conns = append(conns, accept(t, srv))
	}
	var errs [3]chan error
	for i := range errs {
		errs[i] = make(chan error, 1)
	}
	go func() { _, err := conns[0].ReadCommand(context.Background()); errs[0] <- err }()
	go func() { errs[1] <- conns[1].Serve(context.Background(), nil) }()
	go func() { _, err := conns[2].Sink(context.Background()); errs[2] <- err }()
	time.Sleep(10 * time.Millisecond) // let them block

	must(t, srv.Close())
	if err := <-errs[0]; !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadCommand after Close: %v", err)
	}
	if err := <-errs[1]; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if err := <-errs[2]; err != nil {
		t.Errorf("Sink after Close: %v", err)
	}
	if _, err := srv.Accept(ctxT(t)); !errors.Is(err, amqptest.ErrServerClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := srv.Dial(ctxT(t), "tcp", ""); !errors.Is(err, amqptest.ErrServerClosed) {
		t.Errorf("Dial after Close: %v", err)
	}
	must(t, srv.Close()) // idempotent
}

func TestAcceptContext(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{})
	short, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := srv.Accept(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Accept() = %v", err)
	}
	// Several waiting Accepts each get a connection.
	got := make(chan *amqptest.Conn, 3)
	for range 3 {
		go func() {
			sc, _ := srv.Accept(ctxT(t))
			got <- sc
		}()
	}
	for range 3 {
		dialPipe(t, srv).handshake(handshake{})
	}
	for range 3 {
		if sc := <-got; sc == nil {
			t.Error("Accept returned nil")
		}
	}
}

func TestLogf(t *testing.T) {
	var lines []string
	var mu = make(chan struct{}, 1)
	srv := amqptest.NewServer(t, amqptest.Options{Logf: func(format string, args ...any) {
		mu <- struct{}{}
		lines = append(lines, fmt.Sprintf(format, args...))
		<-mu
	}})
	c := dialPipe(t, srv)
	c.handshake(handshake{})
	sc := accept(t, srv)
	c.publish(1, &amqp.BasicPublish{RoutingKey: "logged"}, amqp.Properties{}, []byte("abc"))
	amqptest.ExpectPublish(t, sc)
	must(t, srv.Close())
	all := strings.Join(lines, "\n")
	for _, want := range []string{"send channel 0: connection.start", "recv channel 0: connection.start-ok",
		"recv channel 1: basic.publish", "RoutingKey:logged", "body frame of 3 bytes", "dropped"} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %q:\n%s", want, all)
		}
	}
}
