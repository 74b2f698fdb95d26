package amqp_test

import (
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestConfirmsManyPublishersOneChannel(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, nil)
	var acks, nacks sync.Map
	ch.OnAck(func(tag uint64, multiple bool) { acks.Store(tag, multiple) })
	ch.OnNack(func(tag uint64, multiple bool) { nacks.Store(tag, multiple) })

	const publishers, each = 100, 20
	confs := make(chan *amqp.Confirmation, publishers*each)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte{byte(p), byte(i)}})
				if err != nil {
					t.Error(err)
					return
				}
				confs <- c
			}
		}()
	}
	wg.Wait()
	close(confs)
	tags := map[uint64]bool{}
	for c := range confs {
		require.NoError(t, c.Wait(testCtx(t)))
		require.True(t, c.Acked())
		require.False(t, tags[c.DeliveryTag()], "each publish has its own sequence number")
		tags[c.DeliveryTag()] = true
	}
	require.Len(t, tags, publishers*each)
	for tag := uint64(1); tag <= publishers*each; tag++ {
		require.True(t, tags[tag], "sequence numbers are 1..n")
	}
	require.Zero(t, ch.Unconfirmed())
	// The listeners saw acks covering the last tag.
	require.Eventually(t, func() bool {
		covered := false
		acks.Range(func(k, v any) bool {
			if k.(uint64) == publishers*each {
				covered = true
			}
			return true
		})
		return covered
	}, 5*time.Second, 10*time.Millisecond)
	nacks.Range(func(k, v any) bool { t.Errorf("unexpected nack %v", k); return true })
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, err)
	require.Equal(t, uint32(publishers*each), ok.MessageCount)
}

func TestBrokerNackWithRejectPublish(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	first, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("1")})
	require.NoError(t, err)
	second, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("2")})
	require.NoError(t, err)
	require.NoError(t, first.Wait(testCtx(t)))
	require.ErrorIs(t, second.Wait(testCtx(t)), amqp.ErrNacked)
	require.False(t, second.Acked())
}
