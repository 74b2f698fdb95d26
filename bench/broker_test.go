package bench

import (
	"context"
	"fmt"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// BenchmarkPublishBroker: publishes of 16 B and 1 KiB to RabbitMQ without
// confirms, on one connection and channel, to a queue bounded at 1000
// messages (drop-head). The round ends with a queue.declare passive round
// trip on the publishing channel, which RabbitMQ answers only after it has
// handled every publish before it: msgs/s is what the broker took in. The
// third client, raw, writes pre-encoded frames on a bare socket: it is the
// ceiling.
func BenchmarkPublishBroker(b *testing.B) {
	for _, client := range []string{ours, incumbent, rawWriter} {
		b.Run(client, func(b *testing.B) {
			for _, size := range []int{16, 1024} {
				b.Run(sizeName(size), func(b *testing.B) {
					url := brokerURL(b)
					queue := brokerQueue(b, url, "publish", boundedQueue)
					switch client {
					case ours:
						publishOurs(b, url, queue, size)
					case incumbent:
						publishIncumbent(b, url, queue, size)
					case rawWriter:
						publishRaw(b, url, queue, size)
					}
				})
			}
		})
	}
}

func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

func publishOurs(b *testing.B, url, queue string, size int) {
	ctx := benchCtx(b)
	_, ch := dialOurs(b, ctx, url)
	msg := amqp.Publishing{RoutingKey: queue, Body: body(size)}
	m := start(b)
	for range b.N {
		if _, err := ch.Publish(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	syncOurs(b, ctx, ch, queue)
	m.stop()
}

func publishIncumbent(b *testing.B, url, queue string, size int) {
	ctx := benchCtx(b)
	_, ch := dialIncumbent(b, url)
	msg := amqp091.Publishing{Body: body(size)}
	m := start(b)
	for range b.N {
		if err := ch.PublishWithContext(ctx, "", queue, false, false, msg); err != nil {
			b.Fatal(err)
		}
	}
	syncIncumbent(b, ch, queue)
	m.stop()
}

// confirmWindow is how many publishes may await their confirm in ConfirmBroker.
const confirmWindow = 1000

// BenchmarkConfirmBroker: 1 KiB publishes in confirm mode to RabbitMQ with
// a sliding window of 1000 unconfirmed messages: when 1000 are outstanding,
// the publisher waits for the oldest. The round ends when every confirm is in.
func BenchmarkConfirmBroker(b *testing.B) {
	const size = 1024
	b.Run(ours, func(b *testing.B) {
		url := brokerURL(b)
		queue := brokerQueue(b, url, "confirm", boundedQueue)
		ctx := benchCtx(b)
		_, ch := dialOurs(b, ctx, url)
		if err := ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}); err != nil {
			b.Fatal(err)
		}
		msg := amqp.Publishing{RoutingKey: queue, Body: body(size)}
		window := make([]*amqp.Confirmation, confirmWindow)
		m := start(b)
		for i := range b.N {
			slot := &window[i%confirmWindow]
			if *slot != nil {
				if err := (*slot).Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			c, err := ch.Publish(ctx, msg)
			if err != nil {
				b.Fatal(err)
			}
			*slot = c
		}
		for _, c := range window {
			if c != nil {
				if err := c.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		m.stop()
	})
	b.Run(incumbent, func(b *testing.B) {
		url := brokerURL(b)
		queue := brokerQueue(b, url, "confirm", boundedQueue)
		ctx := benchCtx(b)
		_, ch := dialIncumbent(b, url)
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		msg := amqp091.Publishing{Body: body(size)}
		window := make([]*amqp091.DeferredConfirmation, confirmWindow)
		m := start(b)
		for i := range b.N {
			slot := &window[i%confirmWindow]
			if *slot != nil {
				if ok, err := (*slot).WaitContext(ctx); !ok || err != nil {
					b.Fatalf("confirm: acked %v, %v", ok, err)
				}
			}
			c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, msg)
			if err != nil {
				b.Fatal(err)
			}
			*slot = c
		}
		for _, c := range window {
			if c != nil {
				if ok, err := c.WaitContext(ctx); !ok || err != nil {
					b.Fatalf("confirm: acked %v, %v", ok, err)
				}
			}
		}
		m.stop()
	})
	b.Run(rawWriter, func(b *testing.B) {
		url := brokerURL(b)
		confirmRaw(b, url, brokerQueue(b, url, "confirm", boundedQueue), size)
	})
}

// Consume cadence for ConsumeBroker.
const (
	consumePrefetch = 1000
	ackEvery        = 500
)

// BenchmarkConsumeBroker: a consumer with prefetch 1000 takes b.N messages
// of 1 KiB from a queue that was filled beforehand (outside the timer),
// acknowledging with multiple set every 500 deliveries. The amqplib client
// is the Node.js peer (amqplib_test.go), which measures itself; it is
// skipped without node and npm.
func BenchmarkConsumeBroker(b *testing.B) {
	const size = 1024
	for _, client := range []string{ours, oursRecycle} {
		recycle := client == oursRecycle
		b.Run(client, func(b *testing.B) {
			url := brokerURL(b)
			queue := prefilledQueue(b, url, size)
			ctx := benchCtx(b)
			_, ch := dialOurs(b, ctx, url)
			if err := ch.Qos(ctx, amqp.BasicQos{PrefetchCount: consumePrefetch}); err != nil {
				b.Fatal(err)
			}
			m := start(b)
			c, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: queue}, amqp.ConsumerOptions{Recycle: recycle})
			if err != nil {
				b.Fatal(err)
			}
			for i := range b.N {
				d, err := c.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(d.Body) != size {
					b.Fatalf("body of %d bytes", len(d.Body))
				}
				if (i+1)%ackEvery == 0 || i == b.N-1 {
					if err := d.Ack(amqp.AckOptions{Multiple: true}); err != nil {
						b.Fatal(err)
					}
				}
				d.Release() // does nothing without Recycle
			}
			m.stop()
		})
	}
	b.Run(incumbent, func(b *testing.B) {
		url := brokerURL(b)
		queue := prefilledQueue(b, url, size)
		_, ch := dialIncumbent(b, url)
		if err := ch.Qos(consumePrefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		m := start(b)
		deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := range b.N {
			d, ok := <-deliveries
			if !ok {
				b.Fatal("deliveries closed")
			}
			if len(d.Body) != size {
				b.Fatalf("body of %d bytes", len(d.Body))
			}
			if (i+1)%ackEvery == 0 || i == b.N-1 {
				if err := d.Ack(true); err != nil {
					b.Fatal(err)
				}
			}
		}
		m.stop()
	})
	b.Run(rawWriter, func(b *testing.B) {
		url := brokerURL(b)
		consumeRaw(b, url, prefilledQueue(b, url, size), size)
	})
	b.Run(rawHandoff, func(b *testing.B) {
		url := brokerURL(b)
		consumeRawHandoff(b, url, prefilledQueue(b, url, size), size)
	})
	b.Run(amqplibPeer, func(b *testing.B) {
		url := brokerURL(b)
		consumeAmqplib(b, url, prefilledQueue(b, url, size))
	})
}

// BenchmarkServeBroker: Channel.Serve takes b.N messages of 1 KiB from a
// prefilled queue and acks each one as its handler returns, with 1 and with
// 8 workers (prefetch 1000), against a hand-written Next and Ack loop that
// acks each delivery too: what the handler pool costs per message.
func BenchmarkServeBroker(b *testing.B) {
	const size = 1024
	b.Run("next-ack", func(b *testing.B) {
		url := brokerURL(b)
		queue := prefilledQueue(b, url, size)
		ctx := benchCtx(b)
		_, ch := dialOurs(b, ctx, url)
		if err := ch.Qos(ctx, amqp.BasicQos{PrefetchCount: consumePrefetch}); err != nil {
			b.Fatal(err)
		}
		m := start(b)
		c, err := ch.Consume(ctx, amqp.BasicConsume{Queue: queue})
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			d, err := c.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Ack(amqp.AckOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		m.stop()
	})
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("serve-%dworkers", workers), func(b *testing.B) {
			url := brokerURL(b)
			queue := prefilledQueue(b, url, size)
			ctx := benchCtx(b)
			_, ch := dialOurs(b, ctx, url)
			var handled atomic.Int64
			all := make(chan struct{})
			m := start(b)
			svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: queue}, func(_ context.Context, d *amqp.Delivery) error {
				if handled.Add(1) == int64(b.N) {
					close(all)
				}
				return nil
			}, amqp.ServeOptions{Workers: workers, Prefetch: consumePrefetch})
			if err != nil {
				b.Fatal(err)
			}
			<-all
			m.stop()
			if err := svc.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// prefilledQueue declares a fresh queue and fills it with b.N messages of
// size bytes, waiting until the queue reports them all. Its goroutines carry
// the profiler label phase=setup, so that `pprof -tagignore phase=setup`
// leaves the filling out of a profile.
func prefilledQueue(b *testing.B, url string, size int) string {
	b.Helper()
	queue := brokerQueue(b, url, "consume", nil)
	pprof.Do(benchCtx(b), pprof.Labels("phase", "setup"), func(ctx context.Context) {
		fill(b, ctx, url, queue, size)
	})
	return queue
}

func fill(b *testing.B, ctx context.Context, url, queue string, size int) {
	conn, err := amqp.Dial(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}); err != nil {
		b.Fatal(err)
	}
	msg := amqp.Publishing{RoutingKey: queue, Body: body(size)}
	var last *amqp.Confirmation
	for i := range b.N {
		c, err := ch.Publish(ctx, msg)
		if err != nil {
			b.Fatal(err)
		}
		last = c
		if i%10000 == 9999 { // keep the broker from throttling a runaway publisher
			if err := c.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if last != nil {
		if err := last.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(time.Minute); ; {
		ok := syncOurs(b, ctx, ch, queue)
		if int(ok.MessageCount) >= b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("queue %s holds %d messages, want %d", queue, ok.MessageCount, b.N)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
