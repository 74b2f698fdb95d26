package amqptest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/amqp-go/amqp"
)

// Conn is the server's side of one client connection. The test drives it:
// it reads what the client sent with ReadCommand, ReadFrame and the [Expect]
// helpers, and writes with Send, SendContent and WriteRaw, or hands the
// connection to [Conn.Serve] or [Conn.Sink].
//
// Methods that read or write take a context and return an error: they give
// up when the context ends. Reads are served one at a time and so are
// writes, but one goroutine may read while others write. The Conn reads
// ahead of the test by up to about 1 MiB, as a socket buffer holds, so a
// test that stops reading soon makes the client's writes back up, as a
// stalled broker would.
//
// Once the client has closed the socket, reads return errors wrapping
// io.EOF; once the server has (Drop, CloseConnection, Server.Close), reads
// and writes return errors wrapping net.ErrClosed.
type Conn struct {
	srv *Server
	id  int
	raw net.Conn // the socket: Drop closes it
	nc  net.Conn // raw, or TLS over it

	// The reader goroutine hands over the protocol header on hdr, then
	// frames in batches: as many as it could read without waiting, copied
	// into the batch's buffer. Spent batches come back through free.
	hdr      chan headerItem
	batches  chan *batch
	free     chan *batch
	done     chan struct{} // closed by Drop
	dropOnce sync.Once

	readSem chan struct{} // held (capacity 1) by the one read in progress
	// Guarded by readSem:
	headerRead bool
	cur        *batch       // the batch frames are taken from
	pos        int          // the next frame of cur
	readErr    error        // sticky: the reader goroutine has ended
	pushback   []amqp.Frame // read but kept for later reads (copies)
	partial    map[uint16]*Command

	writeSem chan struct{} // held (capacity 1) by the one write in progress
	wbuf     []byte        // guarded by writeSem

	mu           sync.Mutex
	startOk      *amqp.ConnectionStartOk
	tuneOk       *amqp.ConnectionTuneOk
	open         *amqp.ConnectionOpen
	handshakeErr error
	chans        map[uint16]*chanState
	names        int // for invented queue names and consumer tags
}

// chanState is what the Conn tracks about one channel.
type chanState struct {
	confirming  bool   // confirm.select was read
	publishSeq  uint64 // basic.publish commands read in confirm mode
	deliveryTag uint64 // highest delivery tag sent
}

type headerItem struct {
	header [8]byte
	err    error
}

// A batch is frames the reader goroutine read in a row, with their payloads
// copied into buf, and, in the last batch, why the reader stopped.
type batch struct {
	frames []amqp.Frame
	buf    []byte
	err    error
}

const (
	batchBytes  = 64 << 10 // a batch's buffer; a larger frame gets a larger one
	batchFrames = 1024     // at most this many frames in a batch
	keepBytes   = 1 << 20  // larger buffers are not recycled
)

func newConn(s *Server, id int, raw net.Conn) *Conn {
	c := &Conn{
		srv:      s,
		id:       id,
		raw:      raw,
		nc:       raw,
		hdr:      make(chan headerItem),
		batches:  make(chan *batch),
		free:     make(chan *batch, 2),
		done:     make(chan struct{}),
		readSem:  make(chan struct{}, 1),
		writeSem: make(chan struct{}, 1),
		partial:  make(map[uint16]*Command),
		chans:    make(map[uint16]*chanState),
	}
	if s.opts.TLSConfig != nil {
		c.nc = tls.Server(raw, s.opts.TLSConfig)
	}
	return c
}

// String names the connection in logs and errors, e.g. "conn 1 (pipe)".
func (c *Conn) String() string {
	return fmt.Sprintf("conn %d (%s)", c.id, c.raw.RemoteAddr())
}

// NetConn returns the network connection: the socket or, with
// Options.TLSConfig, the *tls.Conn over it. Writing to it directly races
// with the Conn's own writes; reading from it steals the Conn's frames.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Drop closes the socket at once, without any AMQP close, as a crashing
// broker or a broken network would. Reads and writes waiting on the
// connection return. Drop is idempotent.
func (c *Conn) Drop() {
	c.dropOnce.Do(func() {
		close(c.done)
		c.raw.Close()
		c.srv.logf("conn %d: dropped", c.id)
	})
}

func (c *Conn) dropped() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// errDropped is what reads and writes return once the server side closed
// the socket.
var errDropped = fmt.Errorf("amqptest: connection closed by the server: %w", net.ErrClosed)

// isClosed tells whether err means that the connection is gone, closed by
// either side, rather than that something went wrong on it.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// lock acquires sem unless ctx is done first.
func lock(ctx context.Context, sem chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- Reading ----

// ReadProtocolHeader reads the 8 octets a client sends first, normally
// [amqp.ProtocolHeader]. It is needed only with Options.ManualHandshake,
// and must come before any other read.
func (c *Conn) ReadProtocolHeader(ctx context.Context) ([8]byte, error) {
	if err := lock(ctx, c.readSem); err != nil {
		return [8]byte{}, err
	}
	defer func() { <-c.readSem }()
	if c.headerRead {
		return [8]byte{}, errors.New("amqptest: the protocol header was already read")
	}
	if c.readErr != nil {
		return [8]byte{}, c.readErr
	}
	select {
	case it := <-c.hdr:
		c.headerRead = true
		if it.err != nil {
			c.readErr = c.wrapReadErr(it.err)
			return it.header, c.readErr
		}
		c.srv.logf("conn %d: recv protocol header %q", c.id, it.header[:])
		return it.header, nil
	case <-ctx.Done():
		return [8]byte{}, ctx.Err()
	case <-c.done:
		return [8]byte{}, errDropped
	}
}

func (c *Conn) wrapReadErr(err error) error {
	if c.dropped() {
		return errDropped
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("amqptest: connection closed by the client: %w", err)
	}
	return fmt.Errorf("amqptest: reading: %w", err)
}

// nextFrame returns the next frame, from pushback or from the reader. A
// frame from the reader aliases its batch, which is recycled at a later
// call: the caller copies what it keeps. The caller holds readSem.
func (c *Conn) nextFrame(ctx context.Context) (amqp.Frame, error) {
	if len(c.pushback) > 0 {
		f := c.pushback[0]
		c.pushback[0] = amqp.Frame{}
		c.pushback = c.pushback[1:]
		return f, nil
	}
	if c.readErr != nil {
		return amqp.Frame{}, c.readErr
	}
	if !c.headerRead {
		return amqp.Frame{}, errors.New("amqptest: read the protocol header first (Conn.ReadProtocolHeader)")
	}
	for c.cur == nil || c.pos == len(c.cur.frames) {
		if c.cur != nil {
			if c.cur.err != nil {
				c.readErr = c.wrapReadErr(c.cur.err)
				c.cur = nil
				return amqp.Frame{}, c.readErr
			}
			select {
			case c.free <- c.cur:
			default:
			}
			c.cur = nil
		}
		select {
		case b := <-c.batches:
			c.cur, c.pos = b, 0
		case <-ctx.Done():
			return amqp.Frame{}, ctx.Err()
		case <-c.done:
			c.readErr = errDropped
			return amqp.Frame{}, errDropped
		}
	}
	f := c.cur.frames[c.pos]
	c.pos++
	if c.srv.opts.Logf != nil {
		c.srv.logf("conn %d: recv %s", c.id, describeFrame(f))
	}
	return f, nil
}

func copyFrame(f amqp.Frame) amqp.Frame {
	f.Payload = append([]byte(nil), f.Payload...)
	return f
}

// ReadFrame returns the next frame the client sent, heartbeats included,
// without decoding it. The payload is the caller's to keep. Reading frames
// one by one bypasses what ReadCommand tracks (the handshake's records,
// confirm tags, the frame size limit).
func (c *Conn) ReadFrame(ctx context.Context) (amqp.Frame, error) {
	if err := lock(ctx, c.readSem); err != nil {
		return amqp.Frame{}, err
	}
	defer func() { <-c.readSem }()
	f, err := c.nextFrame(ctx)
	if err != nil {
		return amqp.Frame{}, err
	}
	return copyFrame(f), nil
}

// Command is a method the client sent, with its content if the method
// carries one (basic.publish).
type Command struct {
	Channel uint16
	Method  amqp.Method

	// Properties and Body are the content of basic.publish (and of the
	// other content-carrying methods, should a client send them). Body is
	// the caller's to keep.
	Properties amqp.Properties
	Body       []byte

	// ConfirmTag is, for a basic.publish on a channel in confirm mode, the
	// delivery tag that acknowledges it (1 for the first publish after
	// confirm.select, then 2, ...): pass it to basic.ack or basic.nack.
	// It is 0 otherwise.
	ConfirmTag uint64

	bodySize  uint64
	gotHeader bool
}

// String describes the command, e.g. `channel 1: queue.declare &{Queue:jobs ...}`.
func (cmd *Command) String() string {
	s := fmt.Sprintf("channel %d: %s %+v", cmd.Channel, cmd.Method.MethodName(), cmd.Method)
	if hasContent(cmd.Method) {
		s += fmt.Sprintf(" with a %d-byte body, properties %+v", len(cmd.Body), cmd.Properties)
	}
	return s
}

func hasContent(m amqp.Method) bool {
	switch m.(type) {
	case *amqp.BasicPublish, *amqp.BasicDeliver, *amqp.BasicReturn, *amqp.BasicGetOk:
		return true
	}
	return false
}

// maxBodyPrealloc bounds the memory reserved for a body before it arrives.
const maxBodyPrealloc = 64 << 20

// ReadCommand returns the next method the client sent, skipping heartbeats,
// and for basic.publish also reads the content header and body frames that
// follow. Contents on different channels may interleave, as the protocol
// allows; commands come in the order they complete. If ctx ends while a
// content is half read, the next read resumes it.
//
// It also keeps track of the conversation: it records the handshake's
// start-ok, tune-ok and open (and applies the negotiated frame_max to what
// it reads) and numbers publishes on channels in confirm mode
// (Command.ConfirmTag).
//
// An error that is not about the connection (a method that does not
// decode, frames out of order) leaves the connection usable.
func (c *Conn) ReadCommand(ctx context.Context) (*Command, error) {
	if err := lock(ctx, c.readSem); err != nil {
		return nil, err
	}
	defer func() { <-c.readSem }()
	return c.readCommand(ctx)
}

func (c *Conn) readCommand(ctx context.Context) (*Command, error) {
	for {
		f, err := c.nextFrame(ctx)
		if err != nil {
			return nil, err
		}
		cmd, err := c.assemble(f)
		if err != nil || cmd != nil {
			return cmd, err
		}
	}
}

// assemble takes one frame toward a command and returns the command once
// complete.
func (c *Conn) assemble(f amqp.Frame) (*Command, error) {
	switch f.Type {
	case amqp.FrameHeartbeat:
		return nil, nil
	case amqp.FrameMethod:
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return nil, fmt.Errorf("amqptest: channel %d: %w", f.Channel, err)
		}
		if p := c.partial[f.Channel]; p != nil {
			delete(c.partial, f.Channel)
			return nil, fmt.Errorf("amqptest: channel %d: %s arrived before the content of %s was complete",
				f.Channel, m.MethodName(), p.Method.MethodName())
		}
		cmd := &Command{Channel: f.Channel, Method: m}
		if hasContent(m) {
			c.partial[f.Channel] = cmd
			return nil, nil
		}
		c.track(cmd)
		return cmd, nil
	case amqp.FrameHeader:
		p := c.partial[f.Channel]
		if p == nil || p.gotHeader {
			return nil, fmt.Errorf("amqptest: channel %d: unexpected content header frame", f.Channel)
		}
		h, err := amqp.DecodeContentHeader(f.Payload)
		if err != nil {
			delete(c.partial, f.Channel)
			return nil, fmt.Errorf("amqptest: channel %d: %w", f.Channel, err)
		}
		if h.ClassID != p.Method.ClassID() {
			delete(c.partial, f.Channel)
			return nil, fmt.Errorf("amqptest: channel %d: content header of class %d after %s",
				f.Channel, h.ClassID, p.Method.MethodName())
		}
		p.gotHeader, p.bodySize, p.Properties = true, h.BodySize, h.Properties
		if h.BodySize == 0 {
			return c.complete(p), nil
		}
		p.Body = make([]byte, 0, min(h.BodySize, maxBodyPrealloc))
		return nil, nil
	case amqp.FrameBody:
		p := c.partial[f.Channel]
		if p == nil || !p.gotHeader {
			return nil, fmt.Errorf("amqptest: channel %d: unexpected body frame", f.Channel)
		}
		if uint64(len(p.Body))+uint64(len(f.Payload)) > p.bodySize {
			delete(c.partial, f.Channel)
			return nil, fmt.Errorf("amqptest: channel %d: body frames carry more than the %d bytes the content header announced",
				f.Channel, p.bodySize)
		}
		p.Body = append(p.Body, f.Payload...)
		if uint64(len(p.Body)) == p.bodySize {
			return c.complete(p), nil
		}
		return nil, nil
	}
	return nil, fmt.Errorf("amqptest: channel %d: unexpected %s frame", f.Channel, f.Type)
}

func (c *Conn) complete(cmd *Command) *Command {
	delete(c.partial, cmd.Channel)
	c.track(cmd)
	return cmd
}

// track records what the conversation so far implies.
func (c *Conn) track(cmd *Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := cmd.Method.(type) {
	case *amqp.ConnectionStartOk:
		c.startOk = m
	case *amqp.ConnectionTuneOk:
		c.tuneOk = m
	case *amqp.ConnectionOpen:
		c.open = m
	case *amqp.ChannelOpen:
		c.chans[cmd.Channel] = &chanState{}
	case *amqp.ChannelClose, *amqp.ChannelCloseOk:
		delete(c.chans, cmd.Channel)
	case *amqp.ConfirmSelect:
		c.chanLocked(cmd.Channel).confirming = true
	case *amqp.BasicPublish:
		if st := c.chanLocked(cmd.Channel); st.confirming {
			st.publishSeq++
			cmd.ConfirmTag = st.publishSeq
		}
	}
}

func (c *Conn) chanLocked(ch uint16) *chanState {
	st := c.chans[ch]
	if st == nil {
		st = &chanState{}
		c.chans[ch] = st
	}
	return st
}

// WaitClosed reads and discards whatever the client sends until it closes
// the connection, and returns nil then. It returns an error if ctx ends
// first or the connection breaks in another way (a malformed frame).
func (c *Conn) WaitClosed(ctx context.Context) error {
	if err := lock(ctx, c.readSem); err != nil {
		return err
	}
	defer func() { <-c.readSem }()
	if !c.headerRead {
		select {
		case it := <-c.hdr:
			c.headerRead = true
			if it.err != nil {
				c.readErr = c.wrapReadErr(it.err)
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return nil
		}
	}
	for {
		if _, err := c.nextFrame(ctx); err != nil {
			if ctx.Err() == nil && isClosed(err) {
				return nil
			}
			return err
		}
	}
}

// ---- The handshake's records ----

// StartOk returns the connection.start-ok the client sent, or nil if none
// was read yet: the client's properties, SASL mechanism and response.
func (c *Conn) StartOk() *amqp.ConnectionStartOk {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startOk
}

// TuneOk returns the connection.tune-ok the client sent, or nil if none was
// read yet: the negotiated channel_max, frame_max and heartbeat.
func (c *Conn) TuneOk() *amqp.ConnectionTuneOk {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tuneOk
}

// Open returns the connection.open the client sent, or nil if none was
// read yet: the vhost.
func (c *Conn) Open() *amqp.ConnectionOpen {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// HandshakeErr returns why the background handshake failed, or nil if it
// succeeded or did not run (Options.ManualHandshake).
func (c *Conn) HandshakeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handshakeErr
}

func (c *Conn) setHandshakeErr(err error) {
	c.mu.Lock()
	c.handshakeErr = err
	c.mu.Unlock()
}

// FrameMax returns the largest frame the Conn sends, header and end octet
// included: the frame_max of the client's tune-ok (0: no limit) once read,
// [amqp.MinFrameSize] before. SendContent splits bodies to fit.
func (c *Conn) FrameMax() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tuneOk == nil {
		return amqp.MinFrameSize
	}
	return c.tuneOk.FrameMax
}

// Heartbeat returns the heartbeat interval of the client's tune-ok, or 0
// (none) if it was not read yet.
func (c *Conn) Heartbeat() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tuneOk == nil {
		return 0
	}
	return time.Duration(c.tuneOk.Heartbeat) * time.Second
}

// ---- Writing ----

// aLongTimeAgo is a deadline in the past, to abort a write.
var aLongTimeAgo = time.Unix(1, 0)

// write writes b; the caller holds writeSem. If ctx ends during the write,
// the write is abandoned; if part of b was written the stream is corrupt,
// so the connection is dropped.
func (c *Conn) write(ctx context.Context, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.dropped() {
		return errDropped
	}
	if len(b) == 0 {
		return nil // net.Pipe would wait for a reader even so
	}
	var n int
	var err error
	if ctx.Done() == nil {
		n, err = c.nc.Write(b)
	} else {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			c.nc.SetWriteDeadline(aLongTimeAgo)
			close(fired)
		})
		n, err = c.nc.Write(b)
		if !stop() {
			<-fired
			c.nc.SetWriteDeadline(time.Time{})
		}
	}
	if err == nil {
		return nil
	}
	if c.dropped() {
		return errDropped
	}
	if cerr := ctx.Err(); cerr != nil {
		if n > 0 {
			c.Drop()
			return fmt.Errorf("amqptest: write abandoned after %d of %d bytes, connection dropped: %w", n, len(b), cerr)
		}
		return cerr
	}
	return fmt.Errorf("amqptest: writing: %w", err)
}

func (c *Conn) lockWrite(ctx context.Context) error {
	if err := lock(ctx, c.writeSem); err != nil {
		return err
	}
	return nil
}

func (c *Conn) unlockWrite() {
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil // do not keep a large body's buffer
	}
	<-c.writeSem
}

// Send writes a method frame carrying m on channel ch.
func (c *Conn) Send(ctx context.Context, ch uint16, m amqp.Method) error {
	if err := c.lockWrite(ctx); err != nil {
		return err
	}
	defer c.unlockWrite()
	var err error
	c.wbuf, err = amqp.AppendMethodFrame(c.wbuf[:0], ch, m)
	if err != nil {
		return fmt.Errorf("amqptest: encoding %s: %w", m.MethodName(), err)
	}
	c.trackSend(ch, m)
	c.srv.logf("conn %d: send channel %d: %s %+v", c.id, ch, m.MethodName(), m)
	return c.write(ctx, c.wbuf)
}

// SendContent writes m on channel ch followed by its content: a header frame
// with props and body frames split to fit the negotiated frame_max. All the
// frames go out in one write. Use it for basic.deliver, basic.get-ok and
// basic.return.
func (c *Conn) SendContent(ctx context.Context, ch uint16, m amqp.Method, props amqp.Properties, body []byte) error {
	frameMax := c.FrameMax()
	if err := c.lockWrite(ctx); err != nil {
		return err
	}
	defer c.unlockWrite()
	b, err := amqp.AppendMethodFrame(c.wbuf[:0], ch, m)
	if err == nil {
		b, err = amqp.AppendHeaderFrame(b, ch, m.ClassID(), uint64(len(body)), &props)
	}
	if err != nil {
		c.wbuf = b[:0]
		return fmt.Errorf("amqptest: encoding %s: %w", m.MethodName(), err)
	}
	c.wbuf = amqp.AppendBodyFrames(b, ch, body, frameMax)
	c.trackSend(ch, m)
	c.srv.logf("conn %d: send channel %d: %s %+v with a %d-byte body, properties %+v",
		c.id, ch, m.MethodName(), m, len(body), props)
	return c.write(ctx, c.wbuf)
}

// trackSend keeps the highest delivery tag sent on each channel, for Deliver.
func (c *Conn) trackSend(ch uint16, m amqp.Method) {
	var tag uint64
	switch m := m.(type) {
	case *amqp.BasicDeliver:
		tag = m.DeliveryTag
	case *amqp.BasicGetOk:
		tag = m.DeliveryTag
	default:
		return
	}
	c.mu.Lock()
	if st := c.chanLocked(ch); tag > st.deliveryTag {
		st.deliveryTag = tag
	}
	c.mu.Unlock()
}

// SendHeartbeat writes a heartbeat frame.
func (c *Conn) SendHeartbeat(ctx context.Context) error {
	if err := c.lockWrite(ctx); err != nil {
		return err
	}
	defer c.unlockWrite()
	c.wbuf = amqp.AppendHeartbeatFrame(c.wbuf[:0])
	c.srv.logf("conn %d: send heartbeat", c.id)
	return c.write(ctx, c.wbuf)
}

// WriteRaw writes b as it is, for hostile tests: a bad frame end octet, a
// frame larger than frame_max, an unknown frame type, a protocol header of
// another version, garbage. The frame codec builds most of these, e.g.
// amqp.AppendBodyFrames(nil, 1, body, 0) for one oversized body frame.
func (c *Conn) WriteRaw(ctx context.Context, b []byte) error {
	if err := c.lockWrite(ctx); err != nil {
		return err
	}
	defer c.unlockWrite()
	c.srv.logf("conn %d: send %d raw bytes", c.id, len(b))
	return c.write(ctx, b)
}

// ---- Closing ----

func failing(m amqp.Method) (classID, methodID uint16) {
	if m == nil {
		return 0, 0
	}
	return m.ClassID(), m.MethodID()
}

// CloseChannel sends channel.close on ch with code and text, naming the
// failing method if it is not nil (the client's method being refused, such
// as the *amqp.QueueDeclare that gets 404 NOT_FOUND), and reads until the
// client's channel.close-ok. Frames on ch that arrive meanwhile are
// discarded, as the protocol says; frames on other channels are kept for
// the next reads. If the client closes ch at the same time (its own
// channel.close crosses ours), CloseChannel answers it with close-ok and
// returns.
func (c *Conn) CloseChannel(ctx context.Context, ch uint16, code amqp.ReplyCode, text string, failingMethod amqp.Method) error {
	cls, mth := failing(failingMethod)
	if err := c.Send(ctx, ch, &amqp.ChannelClose{ReplyCode: code, ReplyText: text, FailingClassID: cls, FailingMethodID: mth}); err != nil {
		return err
	}
	if err := lock(ctx, c.readSem); err != nil {
		return err
	}
	defer func() { <-c.readSem }()
	var kept []amqp.Frame
	defer func() { c.pushback = append(kept, c.pushback...) }()
	delete(c.partial, ch)
	for {
		f, err := c.nextFrame(ctx)
		if err != nil {
			return fmt.Errorf("amqptest: waiting for channel.close-ok on channel %d: %w", ch, err)
		}
		if f.Channel != ch {
			if f.Type != amqp.FrameHeartbeat {
				kept = append(kept, copyFrame(f))
			}
			continue
		}
		if f.Type != amqp.FrameMethod {
			continue
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			continue
		}
		switch m.(type) {
		case *amqp.ChannelCloseOk:
			c.track(&Command{Channel: ch, Method: m})
			return nil
		case *amqp.ChannelClose:
			c.track(&Command{Channel: ch, Method: m})
			return c.Send(ctx, ch, &amqp.ChannelCloseOk{})
		}
	}
}

// CloseConnection sends connection.close with code and text, naming the
// failing method if it is not nil, discards everything the client sends
// until its connection.close-ok, and closes the socket. If the client
// closes the connection at the same time, CloseConnection answers its
// connection.close with close-ok. It returns nil once the client has
// answered or hung up, and always closes the socket.
func (c *Conn) CloseConnection(ctx context.Context, code amqp.ReplyCode, text string, failingMethod amqp.Method) error {
	defer c.Drop()
	cls, mth := failing(failingMethod)
	if err := c.Send(ctx, 0, &amqp.ConnectionClose{ReplyCode: code, ReplyText: text, FailingClassID: cls, FailingMethodID: mth}); err != nil {
		return err
	}
	if err := lock(ctx, c.readSem); err != nil {
		return err
	}
	defer func() { <-c.readSem }()
	for {
		f, err := c.nextFrame(ctx)
		if err != nil {
			if ctx.Err() == nil && isClosed(err) && !errors.Is(err, errDropped) {
				return nil // the client hung up instead of answering
			}
			return fmt.Errorf("amqptest: waiting for connection.close-ok: %w", err)
		}
		if f.Channel != 0 || f.Type != amqp.FrameMethod {
			continue
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			continue
		}
		switch m.(type) {
		case *amqp.ConnectionCloseOk:
			return nil
		case *amqp.ConnectionClose:
			return c.Send(ctx, 0, &amqp.ConnectionCloseOk{})
		}
	}
}

// describeFrame is a one-line description of a frame for Options.Logf.
func describeFrame(f amqp.Frame) string {
	switch f.Type {
	case amqp.FrameMethod:
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return fmt.Sprintf("channel %d: undecodable method frame: %v", f.Channel, err)
		}
		return fmt.Sprintf("channel %d: %s %+v", f.Channel, m.MethodName(), m)
	case amqp.FrameHeader:
		h, err := amqp.DecodeContentHeader(f.Payload)
		if err != nil {
			return fmt.Sprintf("channel %d: undecodable content header: %v", f.Channel, err)
		}
		return fmt.Sprintf("channel %d: content header, %d-byte body, properties %+v", f.Channel, h.BodySize, h.Properties)
	case amqp.FrameBody:
		return fmt.Sprintf("channel %d: body frame of %d bytes", f.Channel, len(f.Payload))
	case amqp.FrameHeartbeat:
		return "heartbeat"
	}
	return fmt.Sprintf("channel %d: %s frame of %d bytes", f.Channel, f.Type, len(f.Payload))
}
