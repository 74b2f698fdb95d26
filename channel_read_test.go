package amqp

import "testing"

// BenchmarkReaderDeliver measures the reader's work for one 16-byte
// delivery to a no-ack consumer: decode the method, header and body frames,
// assemble the message and hand it to the consumer, which takes it.
func BenchmarkReaderDeliver(b *testing.B) {
	c := &Connection{done: make(chan struct{}), events: newEventQueue(), cfg: Config{MaxBodySize: 1 << 20}}
	ch := newChannel(c, 1)
	l := &link{c: c, done: make(chan struct{})}
	ch.link.Store(l)
	cons := &Consumer{ch: ch, tag: "ctag", noAck: true, limit: DefaultBufferLimit,
		ready: make(chan struct{}, 1), done: make(chan struct{})}
	ch.consumers["ctag"] = cons
	var frames []byte
	frames, _ = AppendMethodFrame(frames, 1, &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 1, Exchange: "ex", RoutingKey: "rk"})
	frames, _ = AppendHeaderFrame(frames, 1, 60, 16, &Properties{})
	frames = AppendBodyFrames(frames, 1, make([]byte, 16), 0)
	var parsed []Frame
	for rest := frames; len(rest) > 0; {
		size := int(rest[3])<<24 | int(rest[4])<<16 | int(rest[5])<<8 | int(rest[6])
		parsed = append(parsed, Frame{Type: FrameType(rest[0]), Channel: 1, Payload: rest[7 : 7+size]})
		rest = rest[8+size:]
	}
	var strings stringCache
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range parsed {
			if err := ch.reader.handleFrame(f, &strings); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := cons.Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
