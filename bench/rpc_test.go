package bench

import (
	"slices"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
)

// BenchmarkRPC: queue.declare passive round trips, one at a time on one
// channel, against a fake server in a child process ("fake") and against
// RabbitMQ ("broker"). p50-ns is the median round trip.
func BenchmarkRPC(b *testing.B) {
	for _, client := range []string{ours, incumbent, rawWriter} {
		b.Run(client, func(b *testing.B) {
			for _, target := range []string{"fake", "broker"} {
				b.Run(target, func(b *testing.B) {
					var url, queue string
					if target == "fake" {
						url, queue = fakeURL(fakeServer(b, "rpc")), "bench"
					} else {
						url = brokerURL(b)
						queue = brokerQueue(b, url, "rpc", nil)
					}
					lat := make([]int64, b.N)
					var m *meter
					switch client {
					case rawWriter:
						m = rpcRaw(b, url, queue, lat)
					case ours:
						ctx := benchCtx(b)
						_, ch := dialOurs(b, ctx, url)
						args := amqp.QueueDeclare{Queue: queue, Passive: true}
						m = start(b)
						for i := range b.N {
							t0 := time.Now()
							if _, err := ch.QueueDeclare(ctx, args); err != nil {
								b.Fatal(err)
							}
							lat[i] = int64(time.Since(t0))
						}
					case incumbent:
						_, ch := dialIncumbent(b, url)
						m = start(b)
						for i := range b.N {
							t0 := time.Now()
							if _, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil); err != nil {
								b.Fatal(err)
							}
							lat[i] = int64(time.Since(t0))
						}
					}
					m.stop()
					slices.Sort(lat)
					b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
					b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
				})
			}
		})
	}
}
