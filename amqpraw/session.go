package amqpraw

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/amqp-go/amqp"
)

// Options configure a [Session].
type Options struct {
	// TLS, when non-nil, layers TLS with this configuration on the socket.
	TLS *tls.Config

	// MaxFrameSize is the largest frame the session accepts from the broker,
	// header and end octet included; a bigger one ends the session with an
	// error wrapping amqp.ErrFrameTooLarge. Zero means 16 MiB. The session
	// does not apply the negotiated frame_max itself, so that a test can see
	// a broker that sends frames over it.
	MaxFrameSize uint32

	// Handshake holds the defaults of [Session.Handshake]: [DialURL] fills
	// in the URL's credentials and virtual host.
	Handshake Handshake
}

const (
	defaultMaxFrameSize = 16 << 20
	readBufferSize      = 128 << 10
	transcriptLimit     = 400
)

// Session is one connection to a broker, driven frame by frame. Its methods
// may be called from several goroutines, but reads are meant for one
// goroutine at a time: two readers would each get some of the frames.
type Session struct {
	nc     net.Conn
	opts   Options
	events chan event
	done   chan struct{}
	once   sync.Once

	wmu  sync.Mutex // serialises writes; guards wbuf
	wbuf []byte

	rmu     sync.Mutex // serialises reads; guards the fields below
	readErr error      // sticky: the reader goroutine has ended
	partial map[uint16]*Command

	tmu        sync.Mutex // guards transcript and received
	transcript []string
	dropped    int
	received   int

	// What the handshake negotiated, set by Handshake (or by a test that
	// runs the handshake by hand).
	Start    *amqp.ConnectionStart
	Tune     *amqp.ConnectionTune
	TuneOk   *amqp.ConnectionTuneOk
	FrameMax uint32 // body frames of SendContent fit in it; 0: one body frame
}

// event is what the reader goroutine hands over: a frame, the broker's
// protocol header, or the error that ended reading.
type event struct {
	frame  amqp.Frame
	header []byte
	err    error
}

// Dial connects to addr ("host:port") and starts reading. Nothing is sent:
// the protocol header is the test's to send ([Session.SendProtocolHeader],
// or [Session.Handshake] for the whole handshake).
func Dial(ctx context.Context, addr string, opts Options) (*Session, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if opts.TLS != nil {
		cfg := opts.TLS.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	return NewSession(nc, opts), nil
}

// DialURL connects to the first address of an amqp:// or amqps:// URL (as
// amqp.ParseURL reads it) and keeps its credentials and virtual host as
// the defaults of [Session.Handshake].
func DialURL(ctx context.Context, url string) (*Session, error) {
	cfg, err := amqp.ParseURL(url)
	if err != nil {
		return nil, err
	}
	addr := "localhost:5672"
	if cfg.TLS != nil {
		addr = "localhost:5671"
	}
	if len(cfg.Addrs) > 0 {
		addr = cfg.Addrs[0]
	}
	return Dial(ctx, addr, Options{
		TLS:       cfg.TLS,
		Handshake: Handshake{Username: cfg.Username, Password: cfg.Password, Vhost: cfg.Vhost},
	})
}

// NewSession starts a session on a connection that is already open (a
// net.Pipe to amqptest, a connection through a proxy).
func NewSession(nc net.Conn, opts Options) *Session {
	if opts.MaxFrameSize == 0 {
		opts.MaxFrameSize = defaultMaxFrameSize
	}
	s := &Session{
		nc:      nc,
		opts:    opts,
		events:  make(chan event, 64),
		done:    make(chan struct{}),
		partial: map[uint16]*Command{},
	}
	go s.readLoop()
	return s
}

// Close closes the socket at once, without any closing handshake (use
// [Session.Send] with connection.close for a polite one). It is idempotent.
func (s *Session) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.nc.Close()
	})
	return err
}

// NetConn returns the session's connection, for tests that need to
// half-close it or set socket options.
func (s *Session) NetConn() net.Conn { return s.nc }

// readLoop is the only code that reads the socket. Reading ahead into
// events lets every read honour its ctx without socket deadlines.
func (s *Session) readLoop() {
	br := bufio.NewReaderSize(s.nc, readBufferSize)
	fr := amqp.NewFrameReader(br)
	fr.SetMaxFrameSize(s.opts.MaxFrameSize)
	framed := false // fr has read from br, which must not be peeked at any more
	for {
		var ev event
		// A broker that refuses our protocol header answers with its own
		// ("AMQP" and a version) instead of its first frame; 'A' is no
		// frame type, so the two cannot be confused.
		header := false
		if !framed {
			p, err := br.Peek(4)
			header = err == nil && string(p) == "AMQP"
		}
		if header {
			h := make([]byte, 8)
			_, ev.err = io.ReadFull(br, h)
			ev.header = h
		} else {
			f, err := fr.ReadFrame()
			framed = true
			ev.err = err
			if err == nil {
				f.Payload = bytes.Clone(f.Payload)
				ev.frame = f
			}
		}
		select {
		case s.events <- ev:
		case <-s.done:
			return
		}
		if ev.err != nil {
			return
		}
	}
}

// next returns the next event; the caller holds rmu.
func (s *Session) next(ctx context.Context) (event, error) {
	if s.readErr != nil {
		return event{}, s.readErr
	}
	select {
	case ev := <-s.events:
		if ev.err != nil {
			if errors.Is(ev.err, io.EOF) || isReset(ev.err) {
				ev.err = fmt.Errorf("%w (%v)", ErrClosedByPeer, ev.err)
			}
			s.readErr = ev.err
			s.record("← %v", ev.err)
			return event{}, ev.err
		}
		s.tmu.Lock()
		s.received++
		s.tmu.Unlock()
		if ev.header != nil {
			s.record("← protocol header %q", ev.header)
		} else {
			s.record("← %s", describeFrame(ev.frame))
		}
		return ev, nil
	case <-ctx.Done():
		return event{}, ctx.Err()
	case <-s.done:
		return event{}, net.ErrClosed
	}
}

// ErrClosedByPeer is what reads return once the broker has closed the
// connection (end of stream or reset).
var ErrClosedByPeer = errors.New("amqpraw: connection closed by the broker")

// isReset reports a read error from the peer's side (a reset), as opposed
// to our own Close.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout() && !errors.Is(err, net.ErrClosed)
}

// ReadFrame returns the next frame the broker sent, heartbeats included.
// A protocol header from the broker is returned as an *UnexpectedError
// (use [Session.ExpectProtocolHeader] where one may come).
func (s *Session) ReadFrame(ctx context.Context) (amqp.Frame, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.readFrame(ctx)
}

func (s *Session) readFrame(ctx context.Context) (amqp.Frame, error) {
	ev, err := s.next(ctx)
	if err != nil {
		return amqp.Frame{}, err
	}
	if ev.header != nil {
		return amqp.Frame{}, &UnexpectedError{Want: "a frame", Got: fmt.Sprintf("protocol header %q", ev.header)}
	}
	return ev.frame, nil
}

// Received reports how many frames (and protocol headers) the session has
// read from the broker: a conformance check that passed with none did not
// talk to a broker.
func (s *Session) Received() int {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return s.received
}

func (s *Session) record(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if len(s.transcript) == transcriptLimit {
		s.transcript = s.transcript[1:]
		s.dropped++
	}
	s.transcript = append(s.transcript, line)
}

// Transcript returns the frames the session sent (→) and received (←), one
// line each, oldest first; only the last 400 are kept.
func (s *Session) Transcript() []string {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return append([]string(nil), s.transcript...)
}

// write sends b in one Write, bounded by ctx's deadline.
func (s *Session) write(ctx context.Context, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dl, _ := ctx.Deadline() // zero: no deadline
	if err := s.nc.SetWriteDeadline(dl); err != nil {
		return err
	}
	_, err := s.nc.Write(b)
	return err
}

// WriteRaw writes b as it is: hostile bytes, half frames, several frames
// at once.
func (s *Session) WriteRaw(ctx context.Context, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.record("→ raw %d bytes", len(b))
	return s.write(ctx, b)
}

// SendProtocolHeader writes an 8-byte protocol header: amqp.ProtocolHeader
// or any other.
func (s *Session) SendProtocolHeader(ctx context.Context, h [8]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.record("→ protocol header %q", h[:])
	return s.write(ctx, h[:])
}

// Send writes a method frame carrying m on channel ch. Nothing checks that
// m belongs there: any method goes on any channel.
func (s *Session) Send(ctx context.Context, ch uint16, m amqp.Method) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b, err := amqp.AppendMethodFrame(s.wbuf[:0], ch, m)
	if err != nil {
		return err
	}
	s.wbuf = b
	s.record("→ ch%d %s", ch, DescribeMethod(m))
	return s.write(ctx, b)
}

// SendContent writes m, a content header with props and len(body), and
// the body in frames that fit in s.FrameMax, in one write.
func (s *Session) SendContent(ctx context.Context, ch uint16, m amqp.Method, props amqp.Properties, body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b, err := amqp.AppendMethodFrame(s.wbuf[:0], ch, m)
	if err != nil {
		return err
	}
	b, err = amqp.AppendHeaderFrame(b, ch, m.ClassID(), uint64(len(body)), &props)
	if err != nil {
		return err
	}
	b = amqp.AppendBodyFrames(b, ch, body, s.FrameMax)
	s.wbuf = b
	s.record("→ ch%d %s with %d-byte body", ch, DescribeMethod(m), len(body))
	return s.write(ctx, b)
}

// SendHeader writes a content header frame alone: it may announce a size
// other than what follows, or come without its method.
func (s *Session) SendHeader(ctx context.Context, ch, classID uint16, bodySize uint64, props amqp.Properties) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b, err := amqp.AppendHeaderFrame(s.wbuf[:0], ch, classID, bodySize, &props)
	if err != nil {
		return err
	}
	s.wbuf = b
	s.record("→ ch%d header class %d size %d", ch, classID, bodySize)
	return s.write(ctx, b)
}

// SendBody writes body as one body frame, whatever its size.
func (s *Session) SendBody(ctx context.Context, ch uint16, body []byte) error {
	return s.SendFrame(ctx, amqp.FrameBody, ch, body)
}

// SendHeartbeat writes a heartbeat frame on channel 0.
func (s *Session) SendHeartbeat(ctx context.Context) error {
	return s.SendFrame(ctx, amqp.FrameHeartbeat, 0, nil)
}

// SendFrame writes one well-formed frame of any type (known or not) on any
// channel with the given payload.
func (s *Session) SendFrame(ctx context.Context, t amqp.FrameType, ch uint16, payload []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = AppendFrame(s.wbuf[:0], t, ch, payload, FrameEnd)
	s.record("→ ch%d %s frame, %d-byte payload", ch, t, len(payload))
	return s.write(ctx, s.wbuf)
}

// FrameEnd is the octet that ends every well-formed frame.
const FrameEnd = 0xCE

// AppendFrame appends a frame with any type, channel, payload and end
// octet to dst: the building block of malformed frames.
func AppendFrame(dst []byte, t amqp.FrameType, ch uint16, payload []byte, end byte) []byte {
	n := len(payload)
	dst = append(dst, byte(t), byte(ch>>8), byte(ch), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	dst = append(dst, payload...)
	return append(dst, end)
}

// MethodPayload returns the payload of a method frame carrying m: class
// id, method id and arguments. Cut or patched, it makes malformed methods.
func MethodPayload(m amqp.Method) ([]byte, error) {
	f, err := amqp.AppendMethodFrame(nil, 0, m)
	if err != nil {
		return nil, err
	}
	return f[7 : len(f)-1], nil
}
