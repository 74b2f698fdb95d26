package amqptest

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amqp-go/amqp"
)

// A Handler answers one command the client sent. [Conn.Serve] calls it for
// each command in turn, from one goroutine, with Serve's context. A handler
// answers with the Conn's methods (Send, SendContent, CloseChannel, ...),
// and returns an error to stop Serve.
//
// Handlers compose: intercept what the test cares about and pass the rest
// to [AutoReply]:
//
//	func(ctx context.Context, c *amqptest.Conn, cmd *amqptest.Command) error {
//		if qd, ok := cmd.Method.(*amqp.QueueDeclare); ok && qd.Queue == "missing" {
//			return c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue 'missing'", qd)
//		}
//		return amqptest.AutoReply(ctx, c, cmd)
//	}
//
// A handler that blocks stops the server from reading, as a stalled broker
// would; it must return when ctx is done.
type Handler func(ctx context.Context, c *Conn, cmd *Command) error

// AutoReply is the [Handler] of a cooperative broker that says yes to
// everything. It is a scripted peer, not a broker: it keeps no queues and
// routes nothing.
//
//   - channel.open, channel.close, channel.flow, exchange.declare, .delete,
//     .bind and .unbind, queue.declare, .bind, .unbind, .purge and .delete,
//     basic.qos, basic.consume, basic.cancel, basic.recover, tx.select,
//     .commit and .rollback, confirm.select and connection.update-secret
//     get their -ok reply, unless they set no-wait. queue.declare echoes the
//     name or invents one ("amq.gen-1", "amq.gen-2", ...) and reports no
//     messages and no consumers; basic.consume echoes the consumer tag or
//     invents one ("amq.ctag-1", ...).
//   - basic.get gets basic.get-empty.
//   - basic.publish on a channel in confirm mode gets a basic.ack for its
//     Command.ConfirmTag; other publishes get nothing (mandatory ones are
//     not returned).
//   - connection.close gets close-ok, then the server closes the socket, as
//     RabbitMQ does; so does the client's close-ok to a server close.
//   - basic.ack, .nack, .reject, .recover-async, channel.close-ok and
//     channel.flow-ok need no answer.
//
// Anything else (a method only a server sends) is an error.
func AutoReply(ctx context.Context, c *Conn, cmd *Command) error {
	ch := cmd.Channel
	switch m := cmd.Method.(type) {
	case *amqp.ConnectionClose:
		err := c.Send(ctx, 0, &amqp.ConnectionCloseOk{})
		c.Drop()
		return err
	case *amqp.ConnectionCloseOk:
		c.Drop()
		return nil
	case *amqp.ConnectionUpdateSecret:
		return c.Send(ctx, 0, &amqp.ConnectionUpdateSecretOk{})

	case *amqp.ChannelOpen:
		return c.Send(ctx, ch, &amqp.ChannelOpenOk{})
	case *amqp.ChannelClose:
		return c.Send(ctx, ch, &amqp.ChannelCloseOk{})
	case *amqp.ChannelFlow:
		return c.Send(ctx, ch, &amqp.ChannelFlowOk{Active: m.Active})
	case *amqp.ChannelCloseOk, *amqp.ChannelFlowOk:
		return nil

	case *amqp.ExchangeDeclare:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.ExchangeDeclareOk{})
	case *amqp.ExchangeDelete:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.ExchangeDeleteOk{})
	case *amqp.ExchangeBind:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.ExchangeBindOk{})
	case *amqp.ExchangeUnbind:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.ExchangeUnbindOk{})

	case *amqp.QueueDeclare:
		name := m.Queue
		if name == "" {
			name = c.inventName("amq.gen-")
		}
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.QueueDeclareOk{Queue: name})
	case *amqp.QueueBind:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.QueueBindOk{})
	case *amqp.QueueUnbind:
		return c.Send(ctx, ch, &amqp.QueueUnbindOk{})
	case *amqp.QueuePurge:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.QueuePurgeOk{})
	case *amqp.QueueDelete:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.QueueDeleteOk{})

	case *amqp.BasicQos:
		return c.Send(ctx, ch, &amqp.BasicQosOk{})
	case *amqp.BasicConsume:
		tag := m.ConsumerTag
		if tag == "" {
			tag = c.inventName("amq.ctag-")
		}
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.BasicConsumeOk{ConsumerTag: tag})
	case *amqp.BasicCancel:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.BasicCancelOk{ConsumerTag: m.ConsumerTag})
	case *amqp.BasicGet:
		return c.Send(ctx, ch, &amqp.BasicGetEmpty{})
	case *amqp.BasicRecover:
		return c.Send(ctx, ch, &amqp.BasicRecoverOk{})
	case *amqp.BasicPublish:
		if cmd.ConfirmTag == 0 {
			return nil
		}
		return c.Send(ctx, ch, &amqp.BasicAck{DeliveryTag: cmd.ConfirmTag})
	case *amqp.BasicAck, *amqp.BasicNack, *amqp.BasicReject, *amqp.BasicRecoverAsync:
		return nil

	case *amqp.TxSelect:
		return c.Send(ctx, ch, &amqp.TxSelectOk{})
	case *amqp.TxCommit:
		return c.Send(ctx, ch, &amqp.TxCommitOk{})
	case *amqp.TxRollback:
		return c.Send(ctx, ch, &amqp.TxRollbackOk{})

	case *amqp.ConfirmSelect:
		return c.sendUnless(ctx, m.NoWait, ch, &amqp.ConfirmSelectOk{})
	}
	return fmt.Errorf("amqptest: AutoReply has no answer to the client's %v", cmd)
}

func (c *Conn) sendUnless(ctx context.Context, noWait bool, ch uint16, m amqp.Method) error {
	if noWait {
		return nil
	}
	return c.Send(ctx, ch, m)
}

// inventName returns prefix followed by the connection's next number.
func (c *Conn) inventName(prefix string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names++
	return fmt.Sprintf("%s%d", prefix, c.names)
}

// Serve reads the client's commands and passes each to h (nil means
// [AutoReply]) until the connection closes, which is a nil error, or ctx
// ends, or a read or h fails. If heartbeats were negotiated, Serve also
// sends one every half interval, as a broker does.
func (c *Conn) Serve(ctx context.Context, h Handler) error {
	if h == nil {
		h = AutoReply
	}
	defer c.startHeartbeats(ctx)()
	for {
		cmd, err := c.ReadCommand(ctx)
		if err == nil {
			err = h(ctx, c, cmd)
		}
		if err != nil {
			if ctx.Err() == nil && isClosed(err) {
				return nil
			}
			return err
		}
	}
}

// goTracked runs f in a goroutine that Server.Close waits for, unless the
// server is closed already.
func (s *Server) goTracked(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// startHeartbeats sends heartbeats every half negotiated interval until the
// returned function is called (which waits for the goroutine to end) or the
// connection closes.
func (c *Conn) startHeartbeats(ctx context.Context) (stop func()) {
	every := c.Heartbeat() / 2
	if every <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	started := c.srv.goTracked(func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if c.SendHeartbeat(ctx) != nil {
					return
				}
			case <-ctx.Done():
				return
			case <-c.done:
				return
			}
		}
	})
	if !started {
		close(done)
	}
	return func() {
		cancel()
		<-done
	}
}

// SinkStats counts what [Conn.Sink] read.
type SinkStats struct {
	Frames    int64 // frames of every type, heartbeats included
	Publishes int64 // basic.publish methods
	BodyBytes int64 // bytes of message bodies
}

// Sink is the far end of a publisher, for benchmarks: it reads everything
// the client sends as fast as it can, keeping nothing and allocating
// nothing per message. Publishes are counted, not decoded; those on channels
// in confirm mode are acknowledged with basic.ack, several at once
// (multiple) when the client publishes faster than the acks go out, as
// RabbitMQ does. Every other method is answered by [AutoReply], so a client
// can open channels, select confirms and close the connection while Sink
// runs. Heartbeats are sent as in Serve.
//
// Sink returns its counts when the connection closes (with a nil error) or
// ctx ends; with a client that closes its connection when done, the counts
// then cover everything it published. Sink should be the connection's last
// reader.
func (c *Conn) Sink(ctx context.Context) (SinkStats, error) {
	var st SinkStats
	if err := lock(ctx, c.readSem); err != nil {
		return st, err
	}
	defer func() { <-c.readSem }()
	defer c.startHeartbeats(ctx)()
	a := c.startAcker(ctx)
	defer a.stop()

	for {
		f, err := c.nextFrame(ctx)
		if err != nil {
			if ctx.Err() == nil && isClosed(err) {
				err = nil
			}
			return st, err
		}
		st.Frames++
		switch f.Type {
		case amqp.FrameMethod:
		case amqp.FrameBody:
			st.BodyBytes += int64(len(f.Payload))
			continue
		default:
			continue
		}
		switch methodID(f.Payload) {
		case idBasicPublish:
			st.Publishes++
			a.published(f.Channel)
			continue
		case idChannelOpen, idChannelClose, idChannelCloseOk, idConfirmSelect:
			a.forget(f.Channel) // before the method changes the channel's confirm mode
		}
		cmd, err := c.assemble(f)
		if err != nil {
			return st, err
		}
		if cmd == nil {
			continue // another content-carrying method: its frames are skipped
		}
		if err := AutoReply(ctx, c, cmd); err != nil {
			if ctx.Err() == nil && isClosed(err) {
				err = nil
			}
			return st, err
		}
	}
}

// Class and method ids (class<<16 | method) of the methods looked at
// without decoding.
const (
	idConnectionTuneOk = 10<<16 | 31
	idChannelOpen      = 20<<16 | 10
	idChannelClose     = 20<<16 | 40
	idChannelCloseOk   = 20<<16 | 41
	idConfirmSelect    = 85<<16 | 10
	idBasicPublish     = 60<<16 | 40
)

// methodID returns the class and method ids of a method frame's payload.
func methodID(p []byte) uint32 {
	if len(p) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

// acker numbers the publishes Sink counts on channels in confirm mode and
// acknowledges them from its own goroutine, coalescing what accumulates
// while it writes into one basic.ack with multiple set.
type acker struct {
	c     *Conn
	local map[uint16]*ackChan // Sink's goroutine only; nil: not in confirm mode

	mu    sync.Mutex
	chans map[uint16]*ackChan // what the writer acknowledges
	wake  chan struct{}
	quit  chan struct{}
	done  chan struct{}
}

type ackChan struct {
	seq   atomic.Uint64 // publishes counted so far
	acked uint64        // the writer's: the highest delivery tag acknowledged
}

func (c *Conn) startAcker(ctx context.Context) *acker {
	a := &acker{
		c:     c,
		local: make(map[uint16]*ackChan),
		chans: make(map[uint16]*ackChan),
		wake:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if !c.srv.goTracked(func() { a.run(ctx) }) {
		close(a.done)
	}
	return a
}

// published counts a publish on ch.
func (a *acker) published(ch uint16) {
	ac, known := a.local[ch]
	if !known {
		a.c.mu.Lock()
		if st := a.c.chans[ch]; st != nil && st.confirming {
			ac = &ackChan{acked: st.publishSeq}
			ac.seq.Store(st.publishSeq)
		}
		a.c.mu.Unlock()
		a.local[ch] = ac
		if ac != nil {
			a.mu.Lock()
			a.chans[ch] = ac
			a.mu.Unlock()
		}
	}
	if ac == nil {
		return
	}
	ac.seq.Add(1)
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// forget is called before a method that may change ch's confirm mode is
// tracked: the count goes back to the Conn, to be read again afterwards.
func (a *acker) forget(ch uint16) {
	ac := a.local[ch]
	delete(a.local, ch)
	if ac == nil {
		return
	}
	a.mu.Lock()
	delete(a.chans, ch)
	a.mu.Unlock()
	a.c.mu.Lock()
	if st := a.c.chans[ch]; st != nil {
		st.publishSeq = ac.seq.Load()
	}
	a.c.mu.Unlock()
}

func (a *acker) stop() {
	for ch := range a.local {
		a.forget(ch)
	}
	close(a.quit)
	<-a.done
}

func (a *acker) run(ctx context.Context) {
	defer close(a.done)
	type pending struct {
		ch uint16
		ac *ackChan
	}
	var (
		list []pending
		buf  []byte
		ack  = &amqp.BasicAck{}
	)
	for {
		select {
		case <-a.wake:
		case <-a.quit:
			return
		case <-a.c.done:
			return
		}
		list = list[:0]
		a.mu.Lock()
		for ch, ac := range a.chans {
			list = append(list, pending{ch, ac})
		}
		a.mu.Unlock()
		buf = buf[:0]
		for _, p := range list {
			seq := p.ac.seq.Load()
			if seq <= p.ac.acked {
				continue
			}
			ack.DeliveryTag, ack.Multiple = seq, seq-p.ac.acked > 1
			buf, _ = amqp.AppendMethodFrame(buf, p.ch, ack)
			p.ac.acked = seq
		}
		if len(buf) == 0 {
			continue
		}
		if err := a.c.lockWrite(ctx); err != nil {
			return
		}
		err := a.c.write(ctx, buf)
		a.c.unlockWrite()
		if err != nil {
			return
		}
	}
}

// Deliver is the source of a consumer, for benchmarks and load: it sends n
// basic.deliver messages for consumerTag on channel ch, each with props and
// body, as fast as the client reads them. The content of one message is
// encoded once; many small messages go out in each write.
//
// Delivery tags continue from the highest one sent on ch (by Deliver or
// SendContent) since the client opened the channel: 1, 2, ... on a fresh
// channel. Deliver does not wait for acknowledgements; run [Conn.Sink] or
// [Conn.Serve] alongside to read them.
func (c *Conn) Deliver(ctx context.Context, ch uint16, consumerTag string, n int, props amqp.Properties, body []byte) error {
	if n <= 0 {
		return nil
	}
	m := &amqp.BasicDeliver{ConsumerTag: consumerTag}
	content, err := amqp.AppendHeaderFrame(nil, ch, m.ClassID(), uint64(len(body)), &props)
	if err != nil {
		return fmt.Errorf("amqptest: encoding the content header: %w", err)
	}
	content = amqp.AppendBodyFrames(content, ch, body, c.FrameMax())

	c.mu.Lock()
	st := c.chanLocked(ch)
	first := st.deliveryTag + 1
	st.deliveryTag += uint64(n)
	c.mu.Unlock()
	c.srv.logf("conn %d: send channel %d: %d basic.deliver for %q, tags %d to %d, with a %d-byte body, properties %+v",
		c.id, ch, n, consumerTag, first, first+uint64(n)-1, len(body), props)

	const batch = 64 << 10
	if len(content) >= batch {
		// Large messages: write the method frame and the shared content
		// separately rather than copying the content.
		var frame []byte
		for i := range n {
			m.DeliveryTag = first + uint64(i)
			if frame, err = amqp.AppendMethodFrame(frame[:0], ch, m); err != nil {
				return fmt.Errorf("amqptest: encoding basic.deliver: %w", err)
			}
			if err := c.writeAll(ctx, frame, content); err != nil {
				return err
			}
		}
		return nil
	}
	buf := make([]byte, 0, batch+len(content)+64+len(consumerTag))
	for i := range n {
		m.DeliveryTag = first + uint64(i)
		if buf, err = amqp.AppendMethodFrame(buf, ch, m); err != nil {
			return fmt.Errorf("amqptest: encoding basic.deliver: %w", err)
		}
		buf = append(buf, content...)
		if len(buf) >= batch || i == n-1 {
			if err := c.writeAll(ctx, buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	return nil
}

// writeAll writes the buffers back to back, with no other write between.
func (c *Conn) writeAll(ctx context.Context, bufs ...[]byte) error {
	if err := c.lockWrite(ctx); err != nil {
		return err
	}
	defer c.unlockWrite()
	for _, b := range bufs {
		if err := c.write(ctx, b); err != nil {
			return err
		}
	}
	return nil
}
