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

// Broker tests of the lent socket (lead.go).

// A sole consumer that reads the socket itself, against RabbitMQ, while on
// the same connection a publisher waits for each confirmation and another
// channel makes calls, and while some of its Next calls are cut short by
// their ctx (mid-frame, as it happens): every message arrives once, in
// order, and every confirmation and call completes. The calls and
// confirmations come in bursts spread over the stream: while one waits the
// socket is not lent, so between bursts the consumer has it alone, and
// each burst starts while it may hold the lease.
func TestLentSocketAgainstBrokerLosesNothing(t *testing.T) {
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	require.NoError(t, ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 50}))
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q})
	require.NoError(t, err)

	const n, calls = 3000, 200
	pubConn := dialBroker(t) // the stream to consume, from another connection
	pubCh := openChannel(t, pubConn)
	require.NoError(t, pubCh.ConfirmSelect(ctx, amqp.ConfirmSelect{}))

	confirmCh := openChannel(t, conn) // a publisher beside the consumer
	require.NoError(t, confirmCh.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	sideQ := tempQueue(t, confirmCh, nil)
	callCh := openChannel(t, conn)

	var consumed atomic.Int64
	const bursts, gap = 10, n / 20
	// pause, before each burst of calls/bursts operations but the first,
	// waits until the consumer has taken gap more messages (or all).
	pause := func(i int) error {
		if i == 0 || i%(calls/bursts) != 0 {
			return nil
		}
		for from := consumed.Load(); consumed.Load() < min(from+gap, n); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	goErr := func(f func() error) {
		wg.Go(func() { errs <- f() })
	}
	goErr(func() error {
		body := make([]byte, 700) // a few frames' worth per read
		for i := range n {
			copy(body, strconv.Itoa(i)+" ")
			if _, err := pubCh.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: body}); err != nil {
				return err
			}
			if i%100 == 99 {
				if err := pubCh.WaitConfirms(ctx); err != nil {
					return err
				}
			}
		}
		return pubCh.WaitConfirms(ctx)
	})
	goErr(func() error {
		for i := range calls {
			if err := pause(i); err != nil {
				return err
			}
			// A confirmation and a call wait at the same time.
			confirmed := make(chan error, 1)
			go func() {
				conf, err := confirmCh.Publish(ctx, amqp.Publishing{RoutingKey: sideQ, Body: []byte("side")})
				if err == nil {
					err = conf.Wait(ctx)
				}
				confirmed <- err
			}()
			if _, err := callCh.QueueDeclare(ctx, amqp.QueueDeclare{Queue: sideQ, Passive: true}); err != nil {
				return fmt.Errorf("call %d: %w", i, err)
			}
			if err := <-confirmed; err != nil {
				return fmt.Errorf("confirmation %d: %w", i, err)
			}
		}
		return nil
	})

	interrupted := 0
	for want := 0; want < n; {
		nctx, cancel := ctx, context.CancelFunc(func() {})
		if want%7 == 3 {
			nctx, cancel = context.WithTimeout(ctx, 50*time.Microsecond)
		}
		d, err := cons.Next(nctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			interrupted++
			continue
		}
		require.NoError(t, err)
		var got int
		_, err = fmt.Sscanf(string(d.Body), "%d ", &got)
		require.NoError(t, err)
		require.Equal(t, want, got, "in order, none lost or repeated")
		require.Len(t, d.Body, 700)
		if want%10 == 9 || want == n-1 {
			require.NoError(t, d.Ack(amqp.AckOptions{Multiple: true}))
		}
		want++
		consumed.Store(int64(want))
	}
	wg.Wait()
	for range 2 {
		require.NoError(t, <-errs)
	}
	require.Positive(t, conn.LeadsForTest(), "Next never read the socket itself")
	t.Logf("%d leads, %d Next calls cut short by their ctx", conn.LeadsForTest(), interrupted)
	require.Zero(t, countWithin(cons, 100*time.Millisecond), "nothing more")
	require.NoError(t, cons.Cancel(ctx))
}
