package layer_test

import (
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
