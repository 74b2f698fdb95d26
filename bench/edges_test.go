package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// largeQueue holds at most 4 messages, dropping the oldest: 16 MiB
// messages must not pile up in the broker.
var largeQueue = amqp.Table{"x-max-length": int32(4), "x-overflow": "drop-head"}

// BenchmarkLargePublish: publishes of 1 MiB and 16 MiB bodies to RabbitMQ
// without confirms, ended by a round trip as in PublishBroker. Both clients
// dial plain TCP sockets (no counting wrapper), so ours writes bodies from
// the caller's slice with writev. Reports MB/s and the client's CPU per MB.
func BenchmarkLargePublish(b *testing.B) {
	for _, client := range []string{ours, incumbent} {
		b.Run(client, func(b *testing.B) {
			for _, size := range []int{1 << 20, 16 << 20} {
				b.Run(sizeName(size), func(b *testing.B) {
					url := brokerURL(b)
					queue := brokerQueue(b, url, "large", largeQueue)
					ctx := benchCtx(b)
					payload := body(size)
					var m *byteMeter
					switch client {
					case ours:
						conn, err := amqp.Dial(ctx, url)
						if err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { conn.Close(ctx) })
						ch, err := conn.Channel(ctx)
						if err != nil {
							b.Fatal(err)
						}
						msg := amqp.Publishing{RoutingKey: queue, Body: payload}
						m = startBytes(b, size)
						for range b.N {
							if _, err := ch.Publish(ctx, msg); err != nil {
								b.Fatal(err)
							}
						}
						syncOurs(b, ctx, ch, queue)
					case incumbent:
						conn, err := amqp091.Dial(url)
						if err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { conn.Close() })
						ch, err := conn.Channel()
						if err != nil {
							b.Fatal(err)
						}
						msg := amqp091.Publishing{Body: payload}
						m = startBytes(b, size)
						for range b.N {
							if err := ch.PublishWithContext(ctx, "", queue, false, false, msg); err != nil {
								b.Fatal(err)
							}
						}
						syncIncumbent(b, ch, queue)
					}
					m.stop()
				})
			}
		})
	}
}

// byteMeter is the meter of the large-body benchmarks: throughput in MB/s
// and the client's CPU (user+system) per MB.
type byteMeter struct {
	b     *testing.B
	size  int
	wall0 time.Time
	cpu0  int64
}

func startBytes(b *testing.B, size int) *byteMeter {
	b.ReportAllocs()
	b.ResetTimer()
	m := &byteMeter{b: b, size: size, wall0: time.Now()}
	m.cpu0, _ = cpuNanos()
	return m
}

func (m *byteMeter) stop() {
	cpu, _ := cpuNanos()
	wall := time.Since(m.wall0)
	m.b.StopTimer()
	mb := float64(m.b.N) * float64(m.size) / 1e6
	m.b.ReportMetric(mb/wall.Seconds(), "MB/s")
	m.b.ReportMetric(float64(cpu-m.cpu0)/1e6/mb, "cpu-ms/MB")
}

// idleCount is how many connections, channels or consumers an idle-memory
// round opens.
const idleCount = 50

// BenchmarkIdle: the heap (after GC) and goroutines that an idle
// connection, channel (on one connection) or consumer (on one channel) holds,
// each the mean of idleCount opened at once against RabbitMQ. b.N does not
// matter: every round measures the same thing.
func BenchmarkIdle(b *testing.B) {
	for _, client := range []string{ours, incumbent} {
		b.Run(client, func(b *testing.B) {
			for _, what := range []string{"conn", "channel", "consumer"} {
				b.Run(what, func(b *testing.B) {
					url := brokerURL(b)
					var open func() func()
					switch client {
					case ours:
						open = idleOurs(b, url, what)
					case incumbent:
						open = idleIncumbent(b, url, what)
					}
					heap0, g0 := settledHeap()
					var closers []func()
					for range idleCount {
						closers = append(closers, open())
					}
					time.Sleep(100 * time.Millisecond) // let every goroutine settle
					heap1, g1 := settledHeap()
					for _, c := range closers {
						c()
					}
					for range b.N {
					}
					b.ReportMetric(float64(heap1-heap0)/idleCount, "B/"+what)
					b.ReportMetric(float64(g1-g0)/idleCount, "goroutines/"+what)
				})
			}
		})
	}
}

func settledHeap() (heap int64, goroutines int) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc), runtime.NumGoroutine()
}

// idleOurs returns a function that opens one more connection, channel or
// consumer with this module's client and returns how to close it.
func idleOurs(b *testing.B, url, what string) func() func() {
	ctx := benchCtx(b)
	dial := func() *amqp.Connection {
		conn, err := amqp.Dial(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		return conn
	}
	switch what {
	case "conn":
		return func() func() {
			conn := dial()
			return func() { conn.Close(ctx) }
		}
	case "channel":
		conn := dial()
		b.Cleanup(func() { conn.Close(ctx) })
		return func() func() {
			ch, err := conn.Channel(ctx)
			if err != nil {
				b.Fatal(err)
			}
			return func() { ch.Close(ctx) }
		}
	}
	queue := brokerQueue(b, url, "idle", nil)
	conn := dial()
	b.Cleanup(func() { conn.Close(ctx) })
	ch, err := conn.Channel(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return func() func() {
		c, err := ch.Consume(ctx, amqp.BasicConsume{Queue: queue})
		if err != nil {
			b.Fatal(err)
		}
		return func() { c.Cancel(ctx) }
	}
}

// idleIncumbent is idleOurs for amqp091-go.
func idleIncumbent(b *testing.B, url, what string) func() func() {
	dial := func() *amqp091.Connection {
		conn, err := amqp091.Dial(url)
		if err != nil {
			b.Fatal(err)
		}
		return conn
	}
	switch what {
	case "conn":
		return func() func() {
			conn := dial()
			return func() { conn.Close() }
		}
	case "channel":
		conn := dial()
		b.Cleanup(func() { conn.Close() })
		return func() func() {
			ch, err := conn.Channel()
			if err != nil {
				b.Fatal(err)
			}
			return func() { ch.Close() }
		}
	}
	queue := brokerQueue(b, url, "idle", nil)
	conn := dial()
	b.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	return func() func() {
		n++
		tag := fmt.Sprintf("idle-%d", n)
		if _, err := ch.Consume(queue, tag, false, false, false, false, nil); err != nil {
			b.Fatal(err)
		}
		return func() { ch.Cancel(tag, false) }
	}
}

// BenchmarkPublishers: N goroutines publish 16-byte messages to the fake
// sink, all on one channel or each on its own channel of one connection,
// b.N messages in all; then every channel makes a round trip. Shows
// contention on the write path.
func BenchmarkPublishers(b *testing.B) {
	for _, client := range []string{ours, incumbent} {
		b.Run(client, func(b *testing.B) {
			for _, n := range []int{1, 4, 16, 64} {
				for _, layout := range []string{"onechannel", "channels"} {
					if n == 1 && layout == "channels" {
						continue
					}
					b.Run(fmt.Sprintf("%d-%s", n, layout), func(b *testing.B) {
						url := fakeURL(fakeServer(b, "sink"))
						perChannel := layout == "channels"
						switch client {
						case ours:
							publishersOurs(b, url, n, perChannel)
						case incumbent:
							publishersIncumbent(b, url, n, perChannel)
						}
					})
				}
			}
		})
	}
}

// fanOut runs publish on n goroutines, publisher i sending count of the
// b.N messages, and waits for them.
func fanOut(b *testing.B, n int, publish func(i, count int)) {
	var wg sync.WaitGroup
	for i := range n {
		count := b.N / n
		if i < b.N%n {
			count++
		}
		wg.Go(func() { publish(i, count) })
	}
	wg.Wait()
}

func publishersOurs(b *testing.B, url string, n int, perChannel bool) {
	ctx := benchCtx(b)
	conn, ch := dialOurs(b, ctx, url)
	chans := []*amqp.Channel{ch}
	for perChannel && len(chans) < n {
		c, err := conn.Channel(ctx)
		if err != nil {
			b.Fatal(err)
		}
		chans = append(chans, c)
	}
	msg := amqp.Publishing{RoutingKey: "bench", Body: body(16)}
	m := start(b)
	fanOut(b, n, func(i, count int) {
		c := chans[i%len(chans)]
		for range count {
			if _, err := c.Publish(ctx, msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for _, c := range chans {
		syncOurs(b, ctx, c, "bench")
	}
	m.stop()
}

func publishersIncumbent(b *testing.B, url string, n int, perChannel bool) {
	ctx := benchCtx(b)
	conn, ch := dialIncumbent(b, url)
	chans := []*amqp091.Channel{ch}
	for perChannel && len(chans) < n {
		c, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		chans = append(chans, c)
	}
	msg := amqp091.Publishing{Body: body(16)}
	m := start(b)
	fanOut(b, n, func(i, count int) {
		c := chans[i%len(chans)]
		for range count {
			if err := c.PublishWithContext(ctx, "", "bench", false, false, msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for _, c := range chans {
		syncIncumbent(b, c, "bench")
	}
	m.stop()
}

// largeRound is how many bytes of bodies a LargeConsume round puts in the
// queue before consuming them: enough to measure, little enough for a
// shared broker.
const largeRound = 32 << 20

// BenchmarkLargeConsume: a no-ack consumer takes 1 MiB or 16 MiB bodies
// from RabbitMQ. The queue is filled in rounds of 32 MiB with the consumer
// cancelled, so the broker never holds more; only the consuming is timed
// and only its CPU is counted (getrusage around each round's consume).
func BenchmarkLargeConsume(b *testing.B) {
	for _, client := range []string{ours, incumbent} {
		b.Run(client, func(b *testing.B) {
			for _, size := range []int{1 << 20, 16 << 20} {
				b.Run(sizeName(size), func(b *testing.B) {
					url := brokerURL(b)
					queue := brokerQueue(b, url, "largeconsume", nil)
					ctx := benchCtx(b)
					_, fill := dialOurs(b, ctx, url)
					msg := amqp.Publishing{RoutingKey: queue, Body: body(size)}
					var take func(n int)
					switch client {
					case ours:
						take = largeTakeOurs(b, url, queue)
					case incumbent:
						take = largeTakeIncumbent(b, url, queue)
					}
					b.ReportAllocs()
					b.ResetTimer()
					b.StopTimer()
					var cpu int64
					var wall time.Duration
					for done := 0; done < b.N; {
						n := min(b.N-done, max(1, largeRound/size))
						for range n {
							if _, err := fill.Publish(ctx, msg); err != nil {
								b.Fatal(err)
							}
						}
						syncOurs(b, ctx, fill, queue)
						b.StartTimer()
						c0, _ := cpuNanos()
						t0 := time.Now()
						take(n)
						wall += time.Since(t0)
						c1, _ := cpuNanos()
						b.StopTimer()
						cpu += c1 - c0
						done += n
					}
					mb := float64(b.N) * float64(size) / 1e6
					b.ReportMetric(mb/wall.Seconds(), "MB/s")
					b.ReportMetric(float64(cpu)/1e6/mb, "cpu-ms/MB")
				})
			}
		})
	}
}

// largeTakeOurs returns a function that subscribes, takes n deliveries
// and cancels, with this module's client.
func largeTakeOurs(b *testing.B, url, queue string) func(n int) {
	ctx := benchCtx(b)
	conn, err := amqp.Dial(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(ctx) })
	ch, err := conn.Channel(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return func(n int) {
		c, err := ch.Consume(ctx, amqp.BasicConsume{Queue: queue, NoAck: true})
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, err := c.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Cancel(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// largeTakeIncumbent is largeTakeOurs for amqp091-go.
func largeTakeIncumbent(b *testing.B, url, queue string) func(n int) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	return func(n int) {
		deliveries, err := ch.Consume(queue, "large", true, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, ok := <-deliveries; !ok {
				b.Fatal("amqp091: deliveries closed")
			}
		}
		if err := ch.Cancel("large", false); err != nil {
			b.Fatal(err)
		}
		for range deliveries { // drain what came before the cancel
		}
	}
}

// BenchmarkConsumers: N no-ack consumers (1, 10, 100, 1000) on one channel
// share b.N deliveries of 16 B from a queue filled beforehand, each
// consumer read by a goroutine of its own; the round ends when all b.N
// were taken. Shows what many consumers on one connection cost per message.
func BenchmarkConsumers(b *testing.B) {
	const size = 16
	for _, client := range []string{ours, incumbent} {
		b.Run(client, func(b *testing.B) {
			for _, n := range []int{1, 10, 100, 1000} {
				b.Run(fmt.Sprint(n), func(b *testing.B) {
					url := brokerURL(b)
					queue := prefilledQueue(b, url, size)
					switch client {
					case ours:
						consumersOurs(b, url, queue, n)
					case incumbent:
						consumersIncumbent(b, url, queue, n)
					}
				})
			}
		})
	}
}

func consumersOurs(b *testing.B, url, queue string, n int) {
	ctx := benchCtx(b)
	// taking ends when all b.N were taken; subscribing goes on meanwhile.
	taking, cancel := context.WithCancel(ctx)
	defer cancel()
	_, ch := dialOurs(b, ctx, url)
	var taken atomic.Int64
	var wg sync.WaitGroup
	m := start(b)
	for range n {
		c, err := ch.Consume(ctx, amqp.BasicConsume{Queue: queue, NoAck: true})
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for {
				if _, err := c.Next(taking); err != nil {
					return // cancelled once all b.N were taken
				}
				if taken.Add(1) == int64(b.N) {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	m.stop()
}

func consumersIncumbent(b *testing.B, url, queue string, n int) {
	_, ch := dialIncumbent(b, url)
	var taken atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	m := start(b)
	for i := range n {
		deliveries, err := ch.Consume(queue, fmt.Sprint("c", i), true, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for {
				select {
				case _, ok := <-deliveries:
					if !ok {
						return
					}
					if taken.Add(1) == int64(b.N) {
						close(done)
					}
				case <-done:
					return
				}
			}
		})
	}
	wg.Wait()
	m.stop()
}
