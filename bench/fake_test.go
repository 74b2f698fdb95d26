package bench

import (
	"testing"

	"github.com/amqp-go/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// BenchmarkPublishSink: 16-byte publishes, no confirms, to a fake server in
// a child process that reads and discards them. The round ends with a
// queue.declare passive round trip, so every publish has left the client
// and been read by the server. cpu-ns/msg is the client's CPU alone.
func BenchmarkPublishSink(b *testing.B) {
	const size = 16
	b.Run(ours, func(b *testing.B) {
		ctx := benchCtx(b)
		_, ch := dialOurs(b, ctx, fakeURL(fakeServer(b, "sink")))
		msg := amqp.Publishing{RoutingKey: "bench", Body: body(size)}
		m := start(b)
		for range b.N {
			if _, err := ch.Publish(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		syncOurs(b, ctx, ch, "bench")
		m.stop()
	})
	b.Run(incumbent, func(b *testing.B) {
		ctx := benchCtx(b)
		_, ch := dialIncumbent(b, fakeURL(fakeServer(b, "sink")))
		msg := amqp091.Publishing{Body: body(size)}
		m := start(b)
		for range b.N {
			if err := ch.PublishWithContext(ctx, "", "bench", false, false, msg); err != nil {
				b.Fatal(err)
			}
		}
		syncIncumbent(b, ch, "bench")
		m.stop()
	})
}

// BenchmarkConsumeSource: a no-ack consumer receives 16-byte deliveries
// that a fake server in a child process sends as fast as the client reads.
// The server sends exactly b.N (the count travels in the consumer tag).
func BenchmarkConsumeSource(b *testing.B) {
	const size = 16
	for _, client := range []string{ours, oursRecycle} {
		recycle := client == oursRecycle
		b.Run(client, func(b *testing.B) {
			ctx := benchCtx(b)
			_, ch := dialOurs(b, ctx, fakeURL(fakeServer(b, "source")))
			m := start(b)
			c, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: "bench", ConsumerTag: sourceTag(b.N, size), NoAck: true},
				amqp.ConsumerOptions{Recycle: recycle})
			if err != nil {
				b.Fatal(err)
			}
			for range b.N {
				d, err := c.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(d.Body) != size {
					b.Fatalf("body of %d bytes", len(d.Body))
				}
				d.Release() // does nothing without Recycle
			}
			m.stop()
		})
	}
	b.Run(incumbent, func(b *testing.B) {
		ctx := benchCtx(b)
		_, ch := dialIncumbent(b, fakeURL(fakeServer(b, "source")))
		m := start(b)
		deliveries, err := ch.ConsumeWithContext(ctx, "bench", sourceTag(b.N, size), true, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			d, ok := <-deliveries
			if !ok {
				b.Fatal("deliveries closed")
			}
			if len(d.Body) != size {
				b.Fatalf("body of %d bytes", len(d.Body))
			}
		}
		m.stop()
	})
}
