package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// publishIDs publishes messages with MessageID "0".."n-1" to q, confirmed.
func publishIDs(t *testing.T, ch *amqp.Channel, q string, n int) {
	t.Helper()
	ctx := testCtx(t)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	for i := range n {
		_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q, Properties: amqp.Properties{MessageID: strconv.Itoa(i)}})
		require.NoError(t, err)
	}
	require.NoError(t, ch.WaitConfirms(ctx))
}

// drainIDs waits until q (which must have no consumer) holds want ready
// messages, or a while, since the broker counts requeued messages with a
// delay; then takes them all and returns how often each MessageID came.
func drainIDs(t *testing.T, ch *amqp.Channel, q string, want int) map[string]int {
	t.Helper()
	ctx := testCtx(t)
	var count uint32
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Passive: true})
		require.NoError(t, err)
		count = ok.MessageCount
		if int(count) == want || time.Now().After(deadline) {
			break
		}
	}
	left := map[string]int{}
	if count == 0 {
		return left
	}
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)
	for range count {
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		left[d.MessageID]++
	}
	require.NoError(t, cons.Cancel(ctx))
	return left
}

// serveLedger is what a test handler records, by MessageID.
type serveLedger struct {
	mu       sync.Mutex
	acked    map[string]int // handler returned nil: Serve acks
	failed   map[string]int // handler returned an error
	running  atomic.Int32
	peak     atomic.Int32
	onErrors []error
}

func newServeLedger() *serveLedger {
	return &serveLedger{acked: map[string]int{}, failed: map[string]int{}}
}

func (l *serveLedger) enter() {
	n := l.running.Add(1)
	for {
		p := l.peak.Load()
		if n <= p || l.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (l *serveLedger) exit(id string, err error) {
	l.running.Add(-1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.acked[id]++
	} else {
		l.failed[id]++
	}
}

func (l *serveLedger) onError(_ *amqp.Delivery, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onErrors = append(l.onErrors, err)
}

func (l *serveLedger) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// A graceful shutdown in the middle of 1000 deliveries with slow handlers:
// at most Workers handlers run at once; every handler that returned nil
// had its delivery acked exactly once (the broker no longer has it), and
// every other message (never handled, handed back from the prefetch, or
// failed and requeued) is still in the queue: none is lost, none counted
// twice.
func TestServeShutdownMidwaySettlesEveryDeliveryOnce(t *testing.T) {
	const total, workers = 1000, 8
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishIDs(t, openChannel(t, conn), q, total)

	l := newServeLedger()
	svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: q}, func(ctx context.Context, d *amqp.Delivery) error {
		l.enter()
		var err error
		select {
		case <-time.After(time.Duration(2+len(d.MessageID)) * time.Millisecond):
			if n, _ := strconv.Atoi(d.MessageID); n%10 == 3 && !d.Redelivered {
				err = errors.New("this one fails") // requeued by the default policy, then handled
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
		l.exit(d.MessageID, err)
		return err
	}, amqp.ServeOptions{Workers: workers, OnError: l.onError})
	require.NoError(t, err)

	for l.ackedCount() < 150 {
		select {
		case <-svc.Done():
			t.Fatalf("the service ended: %v", svc.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	require.NoError(t, svc.Shutdown(ctx))
	<-svc.Done()
	require.NoError(t, svc.Err())
	running := l.running.Load()
	require.Zero(t, running, "Shutdown waited for the running handlers")

	require.LessOrEqual(t, l.peak.Load(), int32(workers))
	require.Greater(t, l.peak.Load(), int32(1), "handlers ran in parallel")
	for _, err := range l.onErrors {
		require.EqualError(t, err, "this one fails", "only the handlers' own errors; no settlement failed")
	}
	left := drainIDs(t, ch, q, total-l.ackedCount())
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, n := range l.acked {
		require.Equal(t, 1, n, "message %s handled successfully twice", id)
		require.Zero(t, left[id], "message %s acked, yet still in the queue", id)
	}
	for i := range total {
		id := strconv.Itoa(i)
		require.Equal(t, 1, l.acked[id]+left[id], "message %s: acked %d, left %d", id, l.acked[id], left[id])
	}
	require.Less(t, len(l.acked), total, "the shutdown came in the middle")
	t.Logf("acked %d, requeued after failing %d, left %d; peak %d handlers", len(l.acked), len(l.failed), len(left), l.peak.Load())
}

// When Shutdown's ctx ends before the handlers finish, their ctx ends;
// what they return is still settled (here: requeued, the default for an
// error), so every message is back in the queue once Done is closed.
func TestServeShutdownDeadlineCancelsHandlers(t *testing.T) {
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	publishIDs(t, openChannel(t, conn), q, 20)

	started := make(chan struct{}, 20)
	svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: q}, func(ctx context.Context, d *amqp.Delivery) error {
		started <- struct{}{}
		<-ctx.Done() // a handler that only stops when told to
		return ctx.Err()
	}, amqp.ServeOptions{Workers: 4})
	require.NoError(t, err)
	for range 4 {
		<-started
	}
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, svc.Shutdown(sctx), context.DeadlineExceeded)
	<-svc.Done()
	require.NoError(t, svc.Err())
	left := drainIDs(t, ch, q, 20)
	require.Len(t, left, 20, "every message is back: %v", left)
}

// The error policy: nil acks; an error requeues (the message comes again,
// redelivered); an error wrapping ErrReject dead-letters; a panic is
// recovered, reported as a *PanicError and requeued like an error.
func TestServeErrorPolicyAndPanics(t *testing.T) {
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	dlq := tempQueue(t, ch, nil)
	q := tempQueue(t, ch, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	pub := openChannel(t, conn)
	require.NoError(t, pub.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	for _, id := range []string{"ok", "fail-once", "reject", "panic-once"} {
		_, err := pub.Publish(ctx, amqp.Publishing{RoutingKey: q, Properties: amqp.Properties{MessageID: id}})
		require.NoError(t, err)
	}
	require.NoError(t, pub.WaitConfirms(ctx))

	var mu sync.Mutex
	seen := map[string][]bool{} // MessageID: Redelivered of each delivery
	var reported []error
	acked := make(chan string, 10)
	svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: q}, func(ctx context.Context, d *amqp.Delivery) error {
		mu.Lock()
		seen[d.MessageID] = append(seen[d.MessageID], d.Redelivered)
		mu.Unlock()
		switch {
		case d.MessageID == "reject":
			return fmt.Errorf("malformed: %w", amqp.ErrReject)
		case d.MessageID == "fail-once" && !d.Redelivered:
			return errors.New("temporary")
		case d.MessageID == "panic-once" && !d.Redelivered:
			panic("handler bug")
		}
		acked <- d.MessageID
		return nil
	}, amqp.ServeOptions{Workers: 2, OnError: func(d *amqp.Delivery, err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	require.NoError(t, err)

	got := map[string]bool{}
	for len(got) < 3 {
		select {
		case id := <-acked:
			got[id] = true
		case <-ctx.Done():
			t.Fatalf("acked only %v", got)
		}
	}
	require.Equal(t, map[string]bool{"ok": true, "fail-once": true, "panic-once": true}, got)
	require.NoError(t, svc.Shutdown(ctx))

	dead := openChannel(t, conn)
	dl, err := dead.Consume(ctx, amqp.BasicConsume{Queue: dlq, NoAck: true})
	require.NoError(t, err)
	d, err := dl.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "reject", d.MessageID, "ErrReject dead-letters")

	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []bool{false, true}, seen["fail-once"], "requeued, then redelivered")
	require.Equal(t, []bool{false, true}, seen["panic-once"])
	require.Equal(t, []bool{false}, seen["reject"], "not requeued")
	require.Len(t, reported, 3)
	var pe *amqp.PanicError
	found := false
	for _, err := range reported {
		if errors.As(err, &pe) {
			found = true
			require.Equal(t, "handler bug", pe.Value)
			require.Contains(t, string(pe.Stack), "TestServeErrorPolicyAndPanics")
		}
	}
	require.True(t, found, "the panic is reported: %v", reported)
	require.Empty(t, drainIDs(t, ch, q, 0))
}

// With Resubscribe, a server cancel (the queue deleted and declared again)
// does not end the service: it goes on with the new queue's messages.
func TestServeResubscribesAfterServerCancel(t *testing.T) {
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := uniqueName("serve-resubscribe")
	declare := amqp.QueueDeclare{Queue: q, AutoDelete: true}
	_, err := ch.QueueDeclare(ctx, declare)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = ch.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: q}) })

	handled := make(chan string, 10)
	cancelled := make(chan struct{}, 1)
	svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: q}, func(_ context.Context, d *amqp.Delivery) error {
		handled <- string(d.Body)
		return nil
	}, amqp.ServeOptions{Consumer: amqp.ConsumerOptions{Resubscribe: true, OnCancel: func(string) { cancelled <- struct{}{} }}})
	require.NoError(t, err)

	admin := openChannel(t, conn)
	_, err = admin.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("before")})
	require.NoError(t, err)
	require.Equal(t, "before", <-handled)

	_, err = admin.QueueDelete(ctx, amqp.QueueDelete{Queue: q})
	require.NoError(t, err)
	<-cancelled
	_, err = admin.QueueDeclare(ctx, declare)
	require.NoError(t, err)
	for { // the service subscribes again once it finds the queue
		ok, err := admin.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Passive: true})
		require.NoError(t, err)
		if ok.ConsumerCount == 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = admin.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("after")})
	require.NoError(t, err)
	require.Equal(t, "after", <-handled)
	require.NoError(t, svc.Err())
	require.NoError(t, svc.Shutdown(ctx))
}

// The service ends by itself with its consumer: without an error when the
// application closed the channel, with the error when the end came from
// elsewhere (the queue deleted, without Resubscribe).
func TestServeEndsWithItsConsumer(t *testing.T) {
	ctx := testCtx(t)
	conn := dialBroker(t)
	handler := func(context.Context, *amqp.Delivery) error { return nil }

	ch := openChannel(t, conn)
	svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: tempQueue(t, ch, nil)}, handler, amqp.ServeOptions{Workers: 3})
	require.NoError(t, err)
	require.NoError(t, ch.Close(ctx))
	<-svc.Done()
	require.NoError(t, svc.Err())
	require.NoError(t, svc.Shutdown(ctx), "Shutdown after the end is harmless")

	ch = openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	svc, err = ch.Serve(ctx, amqp.BasicConsume{Queue: q}, handler, amqp.ServeOptions{})
	require.NoError(t, err)
	_, err = ch.QueueDelete(ctx, amqp.QueueDelete{Queue: q})
	require.NoError(t, err)
	<-svc.Done()
	require.ErrorIs(t, svc.Err(), amqp.ErrCancelledByServer)

	_, err = ch.Serve(ctx, amqp.BasicConsume{Queue: q, NoAck: true}, handler, amqp.ServeOptions{})
	require.ErrorIs(t, err, amqp.ErrServeNoAck)
}
