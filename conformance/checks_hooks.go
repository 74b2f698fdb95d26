package conformance

import (
	"time"

	"github.com/amqp-go/amqp"
)

// The checks that restart the broker or raise a resource alarm: skipped
// unless Options gives the means (Restart, Alarm), and then run one at a
// time after the others.

const hookTimeout = 90 * time.Second

var _ = registerNeeds("queue.declare.durable/persistence", needsRestart, hookTimeout, func(t *T) {
	s, ch := t.Fresh()
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	closePolitely(t.ctx, s)
	t.Restart()
	s, ch = t.Fresh()
	Call[*amqp.QueueDeclareOk](t, s, ch, &amqp.QueueDeclare{Queue: q, Passive: true})
	t.Publish(s, ch, "", q, amqp.Properties{}, "after the restart")
	if t.Get(s, ch, q) == nil {
		t.Fail("the durable queue exists after the restart but a message sent to it did not arrive")
	}
	t.Pass("the durable queue was there after the restart and took a message")
})

var _ = registerNeeds("queue.bind/durable-exchange", needsRestart, hookTimeout, func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "direct", Durable: true})
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: x, RoutingKey: "k"})
	closePolitely(t.ctx, s)
	t.Restart()
	s, ch = t.Fresh()
	t.Publish(s, ch, x, "k", amqp.Properties{}, "after the restart")
	if t.Get(s, ch, q) == nil {
		t.Fail("after the restart, a message sent through the durable binding did not arrive")
	}
	t.Pass("after the restart, the durable binding still routed")
})

var _ = registerNeeds("basic/01", needsRestart, hookTimeout, func(t *T) {
	s, ch := t.Fresh()
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	Call[*amqp.ConfirmSelectOk](t, s, ch, &amqp.ConfirmSelect{})
	t.Publish(s, ch, "", q, amqp.Properties{DeliveryMode: 2}, "persistent")
	t.confirmed(s, ch, 1)
	closePolitely(t.ctx, s)
	t.Restart()
	s, ch = t.Fresh()
	if m := t.Get(s, ch, q); m == nil || string(m.Body) != "persistent" {
		t.Fail("the confirmed persistent message was gone after the restart")
	}
	t.Pass("the confirmed persistent message was still there after the restart")
})

var _ = registerNeeds("basic/02", needsAlarm, hookTimeout, func(t *T) {
	s, ch := t.Fresh()
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	Call[*amqp.ConfirmSelectOk](t, s, ch, &amqp.ConfirmSelect{})
	t.RaiseAlarm()
	t.publishUntil(s, ch, q, func(m amqp.Method) bool {
		_, blocked := m.(*amqp.ConnectionBlocked)
		_, ack := m.(*amqp.BasicAck)
		return blocked || !ack
	})
	t.ClearAlarm()
	s2, ch2 := t.Fresh()
	ok := Call[*amqp.QueueDeclareOk](t, s2, ch2, &amqp.QueueDeclare{Queue: q, Passive: true})
	sent := t.seqPublished
	if int(ok.MessageCount) < sent-1 { // the last one may still wait behind the block
		t.Fail("%d persistent messages published while the broker ran out of memory, %d in the queue after", sent, ok.MessageCount)
	}
	t.Pass("%d persistent messages published into a memory alarm: %d kept, none discarded", sent, ok.MessageCount)
})

var _ = registerNeeds("basic/03", needsAlarm, hookTimeout, func(t *T) {
	s, ch, q := t.FreshQueue()
	t.RaiseAlarm()
	m := t.publishUntil(s, ch, q, func(m amqp.Method) bool {
		switch m.(type) {
		case *amqp.ChannelFlow, *amqp.ConnectionBlocked:
			return true
		}
		return false
	})
	t.ClearAlarm()
	if f, ok := m.(*amqp.ChannelFlow); ok {
		t.Pass("under a memory alarm the broker slowed the publisher with channel.flow active=%t", f.Active)
	}
	t.Pass("under a memory alarm the broker stopped the publisher with %s, not channel.flow (which is optional)", m.MethodName())
})
