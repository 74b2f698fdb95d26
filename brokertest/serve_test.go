package brokertest_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// Channel.Serve keeps handling through forced closes of its connection
// (with recovery): the consumer is subscribed again behind the same
// Service, deliveries from before each loss come again (their acks are
// reported as stale, never sent), and in the end every message was handled
// successfully at least once and none is left in the queue.
func TestServeAcrossForcedCloses(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	const total, closes, workers = 600, 3, 4
	ctx := ctxFor(t, 3*time.Minute)
	name := uniqueName(t)
	conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}, ConnectionName: name, Recovery: recoveryConfig()})
	events := watchRecovery(conn)
	ch := openChannel(t, conn)
	_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: name, Durable: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := openChannel(t, conn).QueueDelete(ctxFor(t, 10*time.Second), amqp.QueueDelete{Queue: name})
		require.NoError(t, err)
	})

	pub := openChannel(t, dial(t, amqp.Config{Addrs: []string{node.Addr()}}))
	require.NoError(t, pub.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	for i := range total {
		_, err := pub.Publish(ctx, amqp.Publishing{RoutingKey: name,
			Properties: amqp.Properties{MessageID: strconv.Itoa(i), DeliveryMode: amqp.Persistent}})
		require.NoError(t, err)
	}
	require.NoError(t, pub.WaitConfirms(ctx))

	var mu sync.Mutex
	handled := map[string]int{}
	var hold chan struct{} // while set, handlers wait on it: the closes come with every worker mid-delivery
	holding := 0
	progress := make(chan struct{}, 1)
	var unexpected []error
	svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: name}, func(ctx context.Context, d *amqp.Delivery) error {
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		if h := hold; h != nil {
			holding++
			mu.Unlock()
			<-h
			mu.Lock()
		}
		handled[d.MessageID]++
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	}, amqp.ServeOptions{Workers: workers, OnError: func(d *amqp.Delivery, err error) {
		if !errors.Is(err, amqp.ErrStaleDelivery) { // an ack after a loss: the broker delivers it again
			mu.Lock()
			unexpected = append(unexpected, err)
			mu.Unlock()
		}
	}})
	require.NoError(t, err)

	distinct := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(handled)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-progress:
			case <-time.After(50 * time.Millisecond):
			case <-svc.Done():
				t.Fatalf("%s: the service ended: %v", what, svc.Err())
			case <-ctx.Done():
				t.Fatalf("%s: %d of %d messages handled; recovery events:\n%s", what, distinct(), total, events.dump())
			}
		}
	}
	for i := range closes {
		n := distinct()
		waitFor("progress before a close", func() bool { return distinct() >= n+100 })
		mu.Lock()
		hold, holding = make(chan struct{}), 0
		mu.Unlock()
		waitFor("every worker mid-delivery", func() bool { mu.Lock(); defer mu.Unlock(); return holding == workers })
		closeNamed(t, node, name, "serve test")
		events.waitCount(t, amqp.RecoverySucceeded, i+1, time.Minute)
		mu.Lock()
		close(hold) // their acks are stale now: the broker delivers those messages again
		hold = nil
		mu.Unlock()
	}
	waitFor("every message handled", func() bool { return distinct() == total })
	require.NoError(t, svc.Err(), "the service ran through the closes")
	require.NoError(t, svc.Shutdown(ctx))
	require.NoError(t, svc.Err())

	// Nothing is left: every message was acked once it had been handled.
	var ready uint32
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: name, Passive: true})
		require.NoError(t, err)
		if ready = ok.MessageCount; ready == 0 {
			break
		}
	}
	require.Zero(t, ready, "messages left in the queue")
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, unexpected)
	again := 0
	for _, n := range handled {
		again += n - 1
	}
	t.Logf("%d messages, %d handled again after %d forced closes", total, again, closes)
	require.GreaterOrEqual(t, again, closes*workers, "the deliveries in flight at each close came again")
}
