package amqp

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A consumer whose reader stays one delivery behind must not grow its buffer
// with every delivery.
func TestConsumerBufferStaysBounded(t *testing.T) {
	c := &Consumer{ch: &Channel{}, limit: DefaultBufferLimit, ready: make(chan struct{}, 1), done: make(chan struct{})}
	ctx := context.Background()
	c.push(&Delivery{})
	for range 100_000 {
		c.push(&Delivery{})
		_, err := c.Next(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, 1, len(c.queue)-c.head)
	require.Less(t, cap(c.queue), 64, "the buffer holds one delivery but has grown to %d slots", cap(c.queue))
}

// push asks the reader to wake a waiting Next once per read batch: the
// first delivery pushed while Next waits does, the others ride along, and
// after the reader's wake the next batch asks again.
func TestPushAsksForOneWakePerBatch(t *testing.T) {
	c := &Consumer{ch: &Channel{}, limit: DefaultBufferLimit, ready: make(chan struct{}, 1), done: make(chan struct{})}
	c.waiting = 1 // a Next is parked
	var wakes int
	for range 10 {
		if _, wake := c.push(&Delivery{}); wake {
			wakes++
		}
	}
	require.Equal(t, 1, wakes, "one wake for the batch")
	require.Zero(t, c.signals, "push itself signals nobody")
	c.wake()
	require.EqualValues(t, 1, c.signals)
	require.Len(t, c.ready, 1)
	_, wake := c.push(&Delivery{})
	require.True(t, wake, "the next batch asks again")
	c.waiting = 0
	c.wake()
	require.EqualValues(t, 1, c.signals, "nobody waits: no token")
}

// A read that brings many deliveries wakes a waiting consumer after
// wakeBatchFrames frames (64 small deliveries), not only at its end, and the
// rest of the batch follows with the reader's next wake. Frames other than
// deliveries (a publisher's acks on the same connection) count too.
func TestLongReadBatchWakesAfterWakeBatchFrames(t *testing.T) {
	c := &Connection{done: make(chan struct{}), events: newEventQueue(), cfg: Config{MaxBodySize: 1 << 20}}
	ch := newChannel(c, 1)
	l := &link{c: c, done: make(chan struct{})}
	ch.link.Store(l)
	cons := &Consumer{ch: ch, tag: "ctag", noAck: true, limit: DefaultBufferLimit,
		ready: make(chan struct{}, 1), done: make(chan struct{})}
	ch.consumers["ctag"] = cons
	cons.waiting = 1 // a Next is parked (it never takes the token here)
	var frames []byte
	frames, _ = AppendMethodFrame(frames, 1, &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 1})
	frames, _ = AppendHeaderFrame(frames, 1, 60, 1, &Properties{})
	frames = AppendBodyFrames(frames, 1, []byte{1}, 0)
	var parsed []Frame
	for rest := frames; len(rest) > 0; {
		size := int(rest[3])<<24 | int(rest[4])<<16 | int(rest[5])<<8 | int(rest[6])
		parsed = append(parsed, Frame{Type: FrameType(rest[0]), Channel: 1, Payload: rest[7 : 7+size]})
		rest = rest[8+size:]
	}
	var strings stringCache
	deliver := func(n int) {
		for range n {
			for _, f := range parsed {
				require.NoError(t, ch.reader.handleFrame(f, &strings))
				l.wake.dispatched() // as linkReader.run does after each frame
			}
		}
	}
	perBatch := wakeBatchFrames / len(parsed)
	deliver(perBatch - 1)
	require.Zero(t, cons.signals, "no wake within a batch")
	deliver(2) // counting starts with the first delivery's last frame
	require.EqualValues(t, 1, cons.signals, "woken after wakeBatchFrames frames")
	<-cons.ready // Next took the token, and waits again
	deliver(10)
	require.EqualValues(t, 1, cons.signals)
	l.wake.wakeAll() // the reader is about to read the socket
	require.EqualValues(t, 2, cons.signals)
	require.Equal(t, perBatch+11, len(cons.queue)-cons.head)

	<-cons.ready
	deliver(1) // counted from its last frame on; then other frames only
	for range wakeBatchFrames - 1 - 1 {
		l.wake.dispatched()
	}
	require.EqualValues(t, 2, cons.signals, "not yet")
	l.wake.dispatched()
	require.EqualValues(t, 3, cons.signals, "other frames count toward the batch too")
}
