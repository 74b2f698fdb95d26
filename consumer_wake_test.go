package amqp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// waitUntilNextWaits returns once a Next call on c is blocked waiting.
func waitUntilNextWaits(t *testing.T, c *amqp.Consumer) {
	require.Eventually(t, func() bool { return c.WaitingForTest() > 0 }, waitBudget(t), time.Millisecond, "Next never blocked")
}

// The deliveries that one socket read brings wake a waiting Next once, not
// once per delivery: the reader signals the consumer only when it is about
// to read the socket again. The fake server writes each round's deliveries
// in one write, which the reader reads in one go. (Lending is off: with it,
// the rounds after the first are read by Next itself; see lead_test.go.)
func TestReadBatchWakesNextOnce(t *testing.T) {
	ctx := t.Context()
	cons, sc, id := fakeConsumerWith(t, amqp.WithoutLending(amqp.Config{}), amqp.ConsumerOptions{})
	const rounds, n = 5, 40
	got := make(chan *amqp.Delivery, rounds*n)
	go func() {
		for range rounds * n {
			d, err := cons.Next(ctx)
			if err != nil {
				close(got)
				return
			}
			got <- d
		}
	}()
	for r := range rounds {
		waitUntilNextWaits(t, cons)
		before := cons.SignalsForTest()
		require.NoError(t, sc.Deliver(ctx, id, "c", n, amqp.Properties{}, []byte("m")))
		for i := range n {
			d, ok := <-got
			require.True(t, ok, "Next failed")
			require.Equal(t, uint64(r*n+i+1), d.DeliveryTag, "in order")
		}
		require.Equal(t, before+1, cons.SignalsForTest(), "round %d: %d deliveries read at once woke Next more than once", r, n)
	}
}

// A reader that stops at a full consumer buffer wakes the waiting Next
// first: the deliveries it holds back for its read batch would otherwise
// never be read, and the reader would wait for room for ever.
func TestReadBatchWakesNextBeforeBackpressure(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // a guard against a hang, not a timing
	defer cancel()
	cons, sc, id := fakeConsumer(t, amqp.ConsumerOptions{BufferLimit: 4})
	const n = 20
	got := make(chan error, 1)
	go func() {
		for i := range n {
			d, err := cons.Next(ctx)
			if err == nil && d.DeliveryTag != uint64(i+1) {
				err = fmt.Errorf("delivery %d has tag %d", i+1, d.DeliveryTag)
			}
			if err != nil {
				got <- err
				return
			}
		}
		got <- nil
	}()
	waitUntilNextWaits(t, cons)
	require.NoError(t, sc.Deliver(ctx, id, "c", n, amqp.Properties{}, []byte("m")))
	require.NoError(t, <-got)
}
