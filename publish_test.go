package amqp_test

import (
	"context"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// TestPublishAllocatesNothing guards the publish path's cost: a publish
// outside confirm mode allocates nothing (the benchmarks measure the rest).
func TestPublishAllocatesNothing(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	ctx, cancel := context.WithCancel(t.Context())
	sunk := make(chan struct{})
	go func() { defer close(sunk); sc.Sink(ctx) }()
	t.Cleanup(func() { cancel(); <-sunk })
	msg := amqp.Publishing{RoutingKey: "q", Properties: amqp.Properties{ContentType: "text/plain"}, Body: make([]byte, 16)}
	allocs := leastAllocsPerRun(1000, func() {
		if _, err := ch.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}
