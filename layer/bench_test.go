package layer_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// BenchmarkSendReceive is one Send and one Receive on one channel.
func BenchmarkSendReceive(b *testing.B) {
	l := newLayer(b, layer.Config{Namespace: namespace(b), Capacity: 1000})
	ctx := ctxFor(b, 5*time.Minute)
	msg := layer.Message{"type": "websocket.send", "text": "hello"}
	b.ReportAllocs()
	for b.Loop() {
		require.NoError(b, l.Send(ctx, "bench", msg))
		_, _, err := l.Receive(ctx, "bench")
		require.NoError(b, err)
	}
}

// BenchmarkSendParallel is Sends from GOMAXPROCS goroutines to one channel
// (its messages expire unread).
func BenchmarkSendParallel(b *testing.B) {
	l := newLayer(b, layer.Config{Namespace: namespace(b), Capacity: 1 << 30, Expiry: 5 * time.Second})
	ctx := ctxFor(b, 5*time.Minute)
	msg := layer.Message{"type": "websocket.send", "text": "hello"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Send(ctx, "bench-parallel", msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkModes compares the wire modes on the same broker: latency is one
// Send then one Receive on a channel of the layer's own (ns/op is the round
// trip of both); throughput is a sender goroutine and a receiver goroutine
// moving b.N messages through one channel at once (msgs/s).
func BenchmarkModes(b *testing.B) {
	modes := []struct {
		name string
		cfg  func(b *testing.B) layer.Config
	}{
		{"native", func(b *testing.B) layer.Config {
			return layer.Config{Namespace: namespace(b), Capacity: 1 << 20}
		}},
		{"asgi_rabbitmq", func(b *testing.B) layer.Config {
			return layer.Config{Mode: layer.AsgiRabbitMQ, Capacity: 1 << 20}
		}},
		{"channels_rabbitmq", func(b *testing.B) layer.Config {
			return layer.Config{Mode: layer.ChannelsRabbitMQ, Capacity: 1 << 20, LocalCapacity: 1000}
		}},
	}
	msg := layer.Message{"type": "websocket.send", "text": "hello"}
	for _, m := range modes {
		channel := func(b *testing.B, l *layer.Layer, ctx context.Context) string {
			switch l.Mode() {
			case layer.ChannelsRabbitMQ:
				ch, err := l.NewChannel(ctx, "")
				require.NoError(b, err)
				return ch
			case layer.AsgiRabbitMQ:
				return runID(b) + ".bench" // not namespaced: a name of its own
			}
			return "bench"
		}
		b.Run(m.name+"/latency", func(b *testing.B) {
			l := newLayer(b, m.cfg(b))
			ctx := ctxFor(b, 5*time.Minute)
			ch := channel(b, l, ctx)
			b.ReportAllocs()
			for b.Loop() {
				require.NoError(b, l.Send(ctx, ch, msg))
				_, _, err := l.Receive(ctx, ch)
				require.NoError(b, err)
			}
		})
		b.Run(m.name+"/throughput", func(b *testing.B) {
			l := newLayer(b, m.cfg(b))
			ctx := ctxFor(b, 5*time.Minute)
			ch := channel(b, l, ctx)
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				for range b.N {
					if _, _, err := l.Receive(ctx, ch); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for range b.N {
				require.NoError(b, l.Send(ctx, ch, msg))
			}
			require.NoError(b, <-done)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
