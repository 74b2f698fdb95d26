package amqp_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Regression tests from a review of the merge of recovery with the
// performance work; the bug they describe is fixed.

// BUG (channel_recovery.go republishKept, with serverClosed's chRecovering
// branch in channel.go): with Republish, when the server closes the channel
// while the recovery is republishing the kept publishes (a republished
// message to an exchange that no longer exists: 404), serverClosed moves
// the already republished ones back to ch.republish and leaves confirm mode
// (confirms.failAll). republishKept then goes on sending the rest on the
// channel the server closed, and since confirm mode is off it resolves each
// of their Confirmations as ACKED (conf.resolve(nil, nil): "finish has run
// or will", which is not the case here). The channel is then reopened, but
// those messages are gone: the application was told the broker confirmed
// messages that the broker discarded. (Against RabbitMQ, the publishes after
// close-ok on a closed channel would also close the connection with 504.)
func TestRepublishInterruptedByServerCloseAcksOnlyWhatTheServerConfirmed(t *testing.T) {
	confs, serverAcked, _ := republishThroughServerClose(t, false)
	var falseAcks []string
	for i, conf := range confs {
		select {
		case <-conf.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("confirmation %d never resolved", i)
		}
		if conf.Acked() && !serverAcked(i) {
			falseAcks = append(falseAcks, fmt.Sprintf("msg-%02d", i))
		}
	}
	require.Empty(t, falseAcks,
		"Confirmations resolved as acked although the server discarded these messages and never confirmed them")
}

// BUG (same place, second symptom): the Confirmations republishKept resolves
// in that branch are resolved without signalConfirmProgressLocked, so a
// Confirmation.Wait that was already waiting is never woken: it blocks until
// its ctx ends although Done() is closed and Acked() reports true.
func TestRepublishInterruptedByServerCloseWakesWaitingWaits(t *testing.T) {
	confs, _, waited := republishThroughServerClose(t, true)
	for i, conf := range confs {
		select {
		case <-conf.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("confirmation %d never resolved", i)
		}
		select {
		case <-waited[i]:
		case <-time.After(2 * time.Second):
			t.Fatalf("a Wait of confirmation %d that began before the connection loss has not returned 2s after Done() closed (Acked=%t)", i, conf.Acked())
		}
	}
}

// republishThroughServerClose publishes n unconfirmed messages in confirm
// mode with Republish, drops the connection, and on the recovered connection
// closes the channel (404) at the first republished message while holding
// back reading, so the channel.close is handled while the recovery is still
// republishing. With waiting, a goroutine per Confirmation is already in
// Wait before the connection drops. It returns the Confirmations and whether
// the server acked message i on an open confirm-mode channel.
func republishThroughServerClose(t *testing.T, waiting bool) ([]*amqp.Confirmation, func(i int) bool, []chan struct{}) {
	const n = 32
	body := func(i int) []byte {
		return []byte(fmt.Sprintf("msg-%02d%s", i, strings.Repeat(".", 256<<10)))
	}
	var (
		mu        sync.Mutex
		sentClose bool
		closed    bool                // the server considers channel 1 closed
		acked     = map[string]bool{} // bodies the server confirmed on conn 1
	)
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if idx != 1 {
			return false, nil
		}
		mu.Lock()
		defer mu.Unlock()
		switch cmd.Method.(type) {
		case *amqp.BasicPublish:
			if !sentClose {
				// The first republished message goes to an exchange that is
				// gone: close the channel, and be slow to read on, so that
				// the client's republishing waits for room meanwhile.
				sentClose, closed = true, true
				err := c.Send(ctx, cmd.Channel, &amqp.ChannelClose{ReplyCode: amqp.CodeNotFound,
					ReplyText: "NOT_FOUND - no exchange 'gone'", FailingClassID: 60, FailingMethodID: 40})
				mu.Unlock()
				time.Sleep(500 * time.Millisecond)
				mu.Lock()
				return true, err
			}
			if closed {
				return true, nil // discarded: the channel is closed
			}
			if cmd.ConfirmTag != 0 {
				acked[string(cmd.Body[:6])] = true
			}
			return false, nil // AutoReply acks it
		case *amqp.ChannelCloseOk:
			return true, nil
		case *amqp.ChannelOpen:
			closed = false
		}
		return false, nil
	})
	ctx := t.Context()
	conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{Republish: true}))
	require.NoError(t, err)
	closeConn(t, conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))

	b.holdAcks.Store(true)
	confs := make([]*amqp.Confirmation, n)
	waited := make([]chan struct{}, n)
	for i := range n {
		confs[i], err = ch.Publish(ctx, amqp.Publishing{Exchange: "gone", RoutingKey: "k", Body: body(i)})
		require.NoError(t, err)
		if waiting {
			conf, w := confs[i], make(chan struct{})
			waited[i] = w
			go func() {
				defer close(w)
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				_ = conf.Wait(wctx)
			}()
		}
	}
	require.True(t, eventually(10*time.Second, func() bool {
		pubs := 0
		for _, m := range b.methodsOf(0) {
			if strings.Contains(m, "basic.publish") {
				pubs++
			}
		}
		return pubs == n
	}), "the first connection did not receive every publish")
	b.holdAcks.Store(false)
	b.conn(t, 0).Drop()
	return confs, func(i int) bool {
		mu.Lock()
		defer mu.Unlock()
		return acked[fmt.Sprintf("msg-%02d", i)]
	}, waited
}
