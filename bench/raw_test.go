package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
)

// rawConn is the ceiling of PublishBroker: a bare socket that did the AMQP
// handshake with the module's exported codec and then writes pre-encoded
// frames. No client does less work per message.
type rawConn struct {
	nc       net.Conn
	fr       *amqp.FrameReader
	frameMax uint32
}

func dialRaw(ctx context.Context, url string) (*rawConn, error) {
	return dialRawVia(ctx, url, nil)
}

// dialRawVia is dialRaw with the socket wrapped by wrap, if set.
func dialRawVia(ctx context.Context, url string, wrap func(net.Conn) net.Conn) (*rawConn, error) {
	cfg, err := amqp.ParseURL(url)
	if err != nil {
		return nil, err
	}
	addr := "localhost:5672"
	if len(cfg.Addrs) > 0 {
		addr = cfg.Addrs[0]
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	nc = roundIO.wrap(nc)
	if wrap != nil {
		nc = wrap(nc)
	}
	r := &rawConn{nc: nc, fr: amqp.NewFrameReader(nc)}
	if err := r.handshake(cfg); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return r, nil
}

func (r *rawConn) handshake(cfg amqp.Config) error {
	user, pass, vhost := cfg.Username, cfg.Password, cfg.Vhost
	if user == "" && pass == "" {
		user, pass = "guest", "guest"
	}
	if vhost == "" {
		vhost = "/"
	}
	if _, err := r.nc.Write(amqp.ProtocolHeader[:]); err != nil {
		return err
	}
	if _, err := expectRaw[*amqp.ConnectionStart](r, 0); err != nil {
		return err
	}
	if err := r.send(0, &amqp.ConnectionStartOk{
		ClientProperties: amqp.Table{"product": "bench raw writer"},
		Mechanism:        "PLAIN",
		Response:         "\x00" + user + "\x00" + pass,
		Locale:           "en_US",
	}); err != nil {
		return err
	}
	tune, err := expectRaw[*amqp.ConnectionTune](r, 0)
	if err != nil {
		return err
	}
	r.frameMax = tune.FrameMax
	if r.frameMax == 0 {
		r.frameMax = 128 << 10
	}
	r.fr.SetMaxFrameSize(r.frameMax)
	if err := r.send(0, &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: r.frameMax},
		&amqp.ConnectionOpen{VirtualHost: vhost}); err != nil {
		return err
	}
	if _, err := expectRaw[*amqp.ConnectionOpenOk](r, 0); err != nil {
		return err
	}
	if err := r.send(1, &amqp.ChannelOpen{}); err != nil {
		return err
	}
	_, err = expectRaw[*amqp.ChannelOpenOk](r, 1)
	return err
}

// send writes methods on channel ch in one write.
func (r *rawConn) send(ch uint16, ms ...amqp.Method) error {
	var buf []byte
	for _, m := range ms {
		var err error
		if buf, err = amqp.AppendMethodFrame(buf, ch, m); err != nil {
			return err
		}
	}
	_, err := r.nc.Write(buf)
	return err
}

// expectRaw reads frames until a method arrives on channel ch and returns it
// as M. Heartbeats are skipped; anything else is an error.
func expectRaw[M amqp.Method](r *rawConn, ch uint16) (M, error) {
	var zero M
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return zero, err
		}
		if f.Type == amqp.FrameHeartbeat {
			continue
		}
		if f.Type != amqp.FrameMethod || f.Channel != ch {
			return zero, fmt.Errorf("raw: unexpected %s frame on channel %d", f.Type, f.Channel)
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return zero, err
		}
		if got, ok := m.(M); ok {
			return got, nil
		}
		return zero, fmt.Errorf("raw: got %s, want %T", m.MethodName(), zero)
	}
}

// publishBatch encodes perBatch publishes of body to queue once, so that
// publishing is nothing but writing these bytes.
func (r *rawConn) publishBatch(queue string, body []byte, perBatch int) (batch []byte, one int, err error) {
	for range perBatch {
		before := len(batch)
		if batch, err = amqp.AppendMethodFrame(batch, 1, &amqp.BasicPublish{RoutingKey: queue}); err != nil {
			return nil, 0, err
		}
		if batch, err = amqp.AppendHeaderFrame(batch, 1, 60, uint64(len(body)), &amqp.Properties{}); err != nil {
			return nil, 0, err
		}
		batch = amqp.AppendBodyFrames(batch, 1, body, r.frameMax)
		one = len(batch) - before
	}
	return batch, one, nil
}

// sync makes a queue.declare passive round trip on channel 1.
func (r *rawConn) sync(queue string) error {
	if err := r.send(1, &amqp.QueueDeclare{Queue: queue, Passive: true}); err != nil {
		return err
	}
	_, err := expectRaw[*amqp.QueueDeclareOk](r, 1)
	return err
}

// close closes the connection the polite way, so the broker logs no error.
func (r *rawConn) close() {
	_ = r.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if r.send(0, &amqp.ConnectionClose{ReplyCode: amqp.CodeSuccess, ReplyText: "bye"}) == nil {
		_, _ = expectRaw[*amqp.ConnectionCloseOk](r, 0)
	}
	_ = r.nc.Close()
}

// publishRaw is the raw writer's side of PublishBroker.
func publishRaw(b *testing.B, url, queue string, size int) {
	ctx := benchCtx(b)
	r, err := dialRaw(ctx, url)
	if err != nil {
		b.Fatalf("raw dial: %v", err)
	}
	b.Cleanup(r.close)
	// About 64 KiB per write, what our client's writer tends to batch too.
	perBatch := max(1, (64<<10)/(size+100))
	batch, one, err := r.publishBatch(queue, body(size), perBatch)
	if err != nil {
		b.Fatal(err)
	}
	m := start(b)
	for n := b.N; n > 0; n -= perBatch {
		if _, err := r.nc.Write(batch[:min(n, perBatch)*one]); err != nil {
			b.Fatal(err)
		}
	}
	if err := r.sync(queue); err != nil {
		b.Fatal(err)
	}
	m.stop()
}

// consumeRaw is the raw floor of ConsumeBroker: one goroutine that reads
// frames off the socket, counts the deliveries without decoding them, and
// writes a pre-encoded multiple ack every ackEvery deliveries. There is no
// hand-off between goroutines: what it costs per message is what this
// machine charges for reading RabbitMQ's deliveries at all.
func consumeRaw(b *testing.B, url, queue string, size int) {
	ctx := benchCtx(b)
	r, err := dialRaw(ctx, url)
	if err != nil {
		b.Fatalf("raw dial: %v", err)
	}
	b.Cleanup(r.close)
	m := subscribeRaw(b, r, queue)
	var ack []byte
	var tag uint64
	for got := 0; got < b.N; {
		f, err := r.fr.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		switch f.Type {
		case amqp.FrameMethod:
			// basic.deliver: class 60, method 60, consumer-tag shortstr, then the delivery tag.
			p := f.Payload
			if len(p) < 5 || p[1] != 60 || p[3] != 60 || len(p) < 5+int(p[4])+8 {
				b.Fatalf("raw: unexpected method frame % x", p[:min(len(p), 8)])
			}
			tag = binary.BigEndian.Uint64(p[5+int(p[4]):])
		case amqp.FrameBody:
			if len(f.Payload) != size {
				b.Fatalf("raw: body frame of %d bytes", len(f.Payload))
			}
			got++
			if got%ackEvery == 0 || got == b.N {
				ack, _ = amqp.AppendMethodFrame(ack[:0], 1, &amqp.BasicAck{DeliveryTag: tag, Multiple: true})
				if _, err := r.nc.Write(ack); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	m.stop()
}

// consumeRawHandoff is the floor of ConsumeBroker for any client built like
// ours, with a reader goroutine that owns the socket: consumeRaw's reading,
// but the reader hands what each socket read brought to a second goroutine,
// the application's, which counts the deliveries and writes the acks. Like
// our reader it wakes the waiting consumer once per read, just before it
// reads the socket again; the consumer takes everything buffered in one
// step. What it costs above consumeRaw is the price of that one hand-off per
// read on this machine; no decoding, assembling or allocating is done.
func consumeRawHandoff(b *testing.B, url, queue string, size int) {
	ctx := benchCtx(b)
	hooked := &hookedConn{}
	r, err := dialRawVia(ctx, url, func(nc net.Conn) net.Conn { hooked.Conn = nc; return hooked })
	if err != nil {
		b.Fatalf("raw dial: %v", err)
	}
	b.Cleanup(r.close)
	m := subscribeRaw(b, r, queue)
	var (
		mu      sync.Mutex
		got     int    // deliveries read, not yet taken by the consumer
		lastTag uint64 // the tag of the last one
		waiting bool   // the consumer is parked on ready
		wake    bool   // a wake is due before the next socket read
		failed  error
	)
	ready := make(chan struct{}, 1)
	// Before each socket read, the reader wakes the consumer if the frames
	// handed out since the last read gave it deliveries.
	hooked.before = func() {
		mu.Lock()
		if wake && waiting {
			select {
			case ready <- struct{}{}:
			default:
			}
		}
		wake = false
		mu.Unlock()
	}
	go func() {
		var tag uint64
		for {
			f, err := r.fr.ReadFrame()
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
				select {
				case ready <- struct{}{}:
				default:
				}
				return
			}
			switch f.Type {
			case amqp.FrameMethod:
				p := f.Payload
				if len(p) < 5 || p[1] != 60 || p[3] != 60 || len(p) < 5+int(p[4])+8 {
					continue // not a basic.deliver (the close-ok at the end)
				}
				tag = binary.BigEndian.Uint64(p[5+int(p[4]):])
			case amqp.FrameBody:
				mu.Lock()
				got++
				lastTag = tag
				wake = true
				mu.Unlock()
			}
		}
	}()
	var ack []byte
	for done := 0; done < b.N; {
		mu.Lock()
		n, tag, err := got, lastTag, failed
		got = 0
		waiting = n == 0 && err == nil
		mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			<-ready
			mu.Lock()
			waiting = false
			mu.Unlock()
			continue
		}
		before := done
		done += n
		if done/ackEvery != before/ackEvery || done >= b.N {
			ack, _ = amqp.AppendMethodFrame(ack[:0], 1, &amqp.BasicAck{DeliveryTag: tag, Multiple: true})
			if _, err := r.nc.Write(ack); err != nil {
				b.Fatal(err)
			}
		}
	}
	m.stop()
}

// hookedConn calls before, once set, ahead of each read.
type hookedConn struct {
	net.Conn
	before func()
}

func (c *hookedConn) Read(p []byte) (int, error) {
	if c.before != nil {
		c.before()
	}
	return c.Conn.Read(p)
}

// confirmRaw is the raw floor of ConfirmBroker: one goroutine that writes
// pre-encoded publishes while fewer than confirmWindow await their confirm,
// and otherwise reads the broker's acks. No hand-off between goroutines, no
// decoding beyond the ack's delivery tag.
func confirmRaw(b *testing.B, url, queue string, size int) {
	ctx := benchCtx(b)
	r, err := dialRaw(ctx, url)
	if err != nil {
		b.Fatalf("raw dial: %v", err)
	}
	b.Cleanup(r.close)
	if err := r.send(1, &amqp.ConfirmSelect{}); err != nil {
		b.Fatal(err)
	}
	if _, err := expectRaw[*amqp.ConfirmSelectOk](r, 1); err != nil {
		b.Fatal(err)
	}
	perBatch := max(1, (64<<10)/(size+100))
	batch, one, err := r.publishBatch(queue, body(size), perBatch)
	if err != nil {
		b.Fatal(err)
	}
	m := start(b)
	var published, confirmed uint64
	n := uint64(b.N)
	for confirmed < n {
		if room := min(confirmWindow-(published-confirmed), n-published, uint64(perBatch)); room > 0 {
			if _, err := r.nc.Write(batch[:int(room)*one]); err != nil {
				b.Fatal(err)
			}
			published += room
			continue
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		// basic.ack: class 60, method 80, the delivery tag, then the multiple bit.
		p := f.Payload
		if f.Type != amqp.FrameMethod || len(p) < 13 || p[1] != 60 || p[3] != 80 {
			b.Fatalf("raw: unexpected %s frame % x", f.Type, p[:min(len(p), 8)])
		}
		confirmed = max(confirmed, binary.BigEndian.Uint64(p[4:]))
	}
	m.stop()
}

// rpcRaw is the raw floor of RPC: the calling goroutine writes a pre-encoded
// queue.declare passive and then reads the socket itself until declare-ok
// arrives. No client can answer sooner: it has no reader goroutine to wake
// and no request to encode. lat receives each round trip.
func rpcRaw(b *testing.B, url, queue string, lat []int64) *meter {
	ctx := benchCtx(b)
	r, err := dialRaw(ctx, url)
	if err != nil {
		b.Fatalf("raw dial: %v", err)
	}
	b.Cleanup(r.close)
	req, err := amqp.AppendMethodFrame(nil, 1, &amqp.QueueDeclare{Queue: queue, Passive: true})
	if err != nil {
		b.Fatal(err)
	}
	m := start(b)
	for i := range b.N {
		t0 := time.Now()
		if _, err := r.nc.Write(req); err != nil {
			b.Fatal(err)
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		// queue.declare-ok: class 50, method 11.
		if p := f.Payload; f.Type != amqp.FrameMethod || len(p) < 4 || p[1] != 50 || p[3] != 11 {
			b.Fatalf("raw: unexpected %s frame % x", f.Type, p[:min(len(p), 8)])
		}
		lat[i] = int64(time.Since(t0))
	}
	return m
}

// subscribeRaw sets the prefetch on r's channel 1, starts the benchmark's
// meter and subscribes to queue: what both raw consumers do before reading.
func subscribeRaw(b *testing.B, r *rawConn, queue string) *meter {
	if err := r.send(1, &amqp.BasicQos{PrefetchCount: consumePrefetch}); err != nil {
		b.Fatal(err)
	}
	if _, err := expectRaw[*amqp.BasicQosOk](r, 1); err != nil {
		b.Fatal(err)
	}
	m := start(b)
	if err := r.send(1, &amqp.BasicConsume{Queue: queue}); err != nil {
		b.Fatal(err)
	}
	if _, err := expectRaw[*amqp.BasicConsumeOk](r, 1); err != nil {
		b.Fatal(err)
	}
	return m
}
