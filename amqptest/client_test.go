package amqptest_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
)

// rawClient is a minimal AMQP client scripted with the exported codec, so
// that these tests do not depend on the client engine.
type rawClient struct {
	t        testing.TB
	nc       net.Conn
	frameMax uint32

	startOnce sync.Once
	frames    chan frameOrErr
	done      chan struct{} // closed at cleanup: the reader stops
	wg        sync.WaitGroup
}

type frameOrErr struct {
	f   amqp.Frame
	err error
}

func newRawClient(t testing.TB, nc net.Conn) *rawClient {
	c := &rawClient{t: t, nc: nc, frameMax: amqp.MinFrameSize, frames: make(chan frameOrErr, 1<<14), done: make(chan struct{})}
	t.Cleanup(func() {
		close(c.done)
		nc.Close()
		c.wg.Wait()
	})
	return c
}

// dialPipe connects a raw client through srv.Dial.
func dialPipe(t testing.TB, srv *amqptest.Server) *rawClient {
	t.Helper()
	nc, err := srv.Dial(t.Context(), "tcp", "ignored")
	if err != nil {
		t.Fatal(err)
	}
	return newRawClient(t, nc)
}

// dialTCP connects a raw client to srv's listener.
func dialTCP(t testing.TB, srv *amqptest.Server) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return newRawClient(t, nc)
}

// startReading starts the reader goroutine; before it, the test may read
// raw bytes from nc.
func (c *rawClient) startReading() {
	c.startOnce.Do(func() {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer close(c.frames)
			fr := amqp.NewFrameReader(c.nc)
			fr.SetMaxFrameSize(0)
			for {
				f, err := fr.ReadFrame()
				if err == nil {
					f.Payload = append([]byte(nil), f.Payload...)
				}
				select {
				case c.frames <- frameOrErr{f: f, err: err}:
				case <-c.done:
					return
				}
				if err != nil {
					return
				}
			}
		}()
	})
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

func (c *rawClient) send(ch uint16, m amqp.Method) {
	c.t.Helper()
	b, err := amqp.AppendMethodFrame(nil, ch, m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(b)
}

func contentFrames(t testing.TB, ch uint16, m amqp.Method, props amqp.Properties, body []byte, frameMax uint32) []byte {
	t.Helper()
	b, err := amqp.AppendMethodFrame(nil, ch, m)
	if err == nil {
		b, err = amqp.AppendHeaderFrame(b, ch, m.ClassID(), uint64(len(body)), &props)
	}
	if err != nil {
		t.Fatal(err)
	}
	return amqp.AppendBodyFrames(b, ch, body, frameMax)
}

func (c *rawClient) publish(ch uint16, m *amqp.BasicPublish, props amqp.Properties, body []byte) {
	c.t.Helper()
	c.write(contentFrames(c.t, ch, m, props, body, c.frameMax))
}

// next returns the next frame, heartbeats included.
func (c *rawClient) next() (amqp.Frame, error) {
	c.startReading()
	select {
	case fe, ok := <-c.frames:
		if !ok {
			return amqp.Frame{}, io.EOF
		}
		return fe.f, fe.err
	case <-time.After(waitBudget(c.t)):
		return amqp.Frame{}, errors.New("client: no frame before the test's deadline")
	}
}

// method returns the next method, skipping heartbeats.
func (c *rawClient) method() (uint16, amqp.Method) {
	c.t.Helper()
	for {
		f, err := c.next()
		if err != nil {
			c.t.Fatalf("client: reading: %v", err)
		}
		if f.Type == amqp.FrameHeartbeat {
			continue
		}
		if f.Type != amqp.FrameMethod {
			c.t.Fatalf("client: got a %s frame on channel %d, want a method", f.Type, f.Channel)
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			c.t.Fatal(err)
		}
		return f.Channel, m
	}
}

func expectClient[M amqp.Method](c *rawClient) (uint16, M) {
	c.t.Helper()
	ch, m := c.method()
	typed, ok := m.(M)
	if !ok {
		c.t.Fatalf("client: got %s %+v on channel %d", m.MethodName(), m, ch)
	}
	return ch, typed
}

// content reads a content header and body frames.
func (c *rawClient) content() (amqp.Properties, []byte) {
	c.t.Helper()
	f, err := c.next()
	if err != nil || f.Type != amqp.FrameHeader {
		c.t.Fatalf("client: want a content header, got %v %v", f.Type, err)
	}
	h, err := amqp.DecodeContentHeader(f.Payload)
	if err != nil {
		c.t.Fatal(err)
	}
	body := make([]byte, 0, h.BodySize)
	for uint64(len(body)) < h.BodySize {
		f, err := c.next()
		if err != nil || f.Type != amqp.FrameBody {
			c.t.Fatalf("client: want a body frame, got %v %v", f.Type, err)
		}
		if c.frameMax != 0 && uint32(len(f.Payload))+8 > c.frameMax {
			c.t.Fatalf("client: body frame of %d bytes exceeds frame_max %d", len(f.Payload)+8, c.frameMax)
		}
		body = append(body, f.Payload...)
	}
	return h.Properties, body
}

// expectEOF waits for the server to close the connection.
func (c *rawClient) expectEOF() {
	c.t.Helper()
	for {
		f, err := c.next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) {
			return
		}
		if err != nil {
			c.t.Fatalf("client: want EOF, got %v", err)
		}
		if f.Type != amqp.FrameHeartbeat {
			c.t.Fatalf("client: want EOF, got a %s frame", f.Type)
		}
	}
}

// handshake is a cooperative client's handshake.
type handshake struct {
	mechanism, response string
	caps                amqp.Table
	frameMax            uint32 // 0: accept the server's
	channelMax          uint16
	heartbeat           uint16
	vhost               string
}

func (c *rawClient) handshake(h handshake) *amqp.ConnectionStart {
	c.t.Helper()
	c.write(amqp.ProtocolHeader[:])
	start := c.startOk(h)
	_, tune := expectClient[*amqp.ConnectionTune](c)
	c.tuneOk(h, tune)
	c.openVhost(h)
	expectClient[*amqp.ConnectionOpenOk](c)
	return start
}

func (c *rawClient) startOk(h handshake) *amqp.ConnectionStart {
	c.t.Helper()
	_, start := expectClient[*amqp.ConnectionStart](c)
	if h.mechanism == "" {
		h.mechanism = "PLAIN"
	}
	if h.response == "" && h.mechanism == "PLAIN" {
		h.response = "\x00guest\x00guest"
	}
	caps := h.caps
	if caps == nil {
		caps = amqp.Table{"authentication_failure_close": true, "publisher_confirms": true}
	}
	c.send(0, &amqp.ConnectionStartOk{
		ClientProperties: amqp.Table{"product": "rawClient", "capabilities": caps},
		Mechanism:        h.mechanism,
		Response:         h.response,
		Locale:           "en_US",
	})
	return start
}

func (c *rawClient) tuneOk(h handshake, tune *amqp.ConnectionTune) {
	c.t.Helper()
	ok := &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: tune.Heartbeat}
	if h.frameMax != 0 {
		ok.FrameMax = h.frameMax
	}
	if h.channelMax != 0 {
		ok.ChannelMax = h.channelMax
	}
	if h.heartbeat != 0 {
		ok.Heartbeat = h.heartbeat
	}
	c.send(0, ok)
	c.frameMax = ok.FrameMax
}

func (c *rawClient) openVhost(h handshake) {
	c.t.Helper()
	vhost := h.vhost
	if vhost == "" {
		vhost = "/"
	}
	c.send(0, &amqp.ConnectionOpen{VirtualHost: vhost})
}

// ctxT is a context for server calls in tests.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitBudget(t))
	t.Cleanup(cancel)
	return ctx
}

// waitBudget is how long a test may wait for what must happen: most of the
// time left before the test's deadline, so that a loaded machine makes it
// slower, never wrong; 10 s where there is no deadline (or in a synctest
// bubble, where it is virtual time).
func waitBudget(tb testing.TB) time.Duration {
	if t, ok := tb.(*testing.T); ok && !inBubble(t) {
		if deadline, ok := t.Deadline(); ok {
			left := time.Until(deadline)
			return max(left-max(left/10, time.Second), 10*time.Second)
		}
	}
	return 10 * time.Second
}

// inBubble reports whether t runs in a synctest bubble, where t.Deadline panics.
func inBubble(t *testing.T) (in bool) {
	defer func() { in = recover() != nil }()
	t.Deadline()
	return false
}

// accept accepts a connection whose handshake must have succeeded.
func accept(t testing.TB, srv *amqptest.Server) *amqptest.Conn {
	t.Helper()
	sc, err := srv.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// must fails the test on a server call's error.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
