package layer

import (
	"context"
	"fmt"
	"strings"

	"github.com/amqp-go/amqp"
)

// deadLetterPrefetch bounds the dead letters a layer holds unhandled.
const deadLetterPrefetch = 64

// setUp is what asgi_rabbitmq does on connecting
// (RabbitmqConnection.start_loop, Protocol.declare_dead_letters): declare
// the fanout exchange and the queue "dead-letters", bind them, and consume
// the queue, sharing its messages round-robin with every other
// asgi_rabbitmq process. Without some process consuming it, group messages
// never reach process-specific members and group memberships never expire.
func (w *asgiWire) setUp(ctx context.Context, conn *amqp.Connection) error {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	act, err := conn.Channel(ctx) // for what the dead letters ask for
	if err != nil {
		return err
	}
	err = ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: asgiDeadLetters, Type: "fanout"})
	if err == nil {
		_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: asgiDeadLetters})
	}
	if err == nil {
		// pika's queue_bind routes with the queue's name by default.
		err = ch.QueueBind(ctx, amqp.QueueBind{Queue: asgiDeadLetters, Exchange: asgiDeadLetters, RoutingKey: asgiDeadLetters})
	}
	if err == nil {
		// Python consumes with no prefetch limit, so a burst of dead
		// letters all lands in one process's memory; a bound here changes
		// nothing else the other processes see.
		err = ch.Qos(ctx, amqp.BasicQos{PrefetchCount: deadLetterPrefetch})
	}
	var c *amqp.Consumer
	if err == nil {
		c, err = ch.Consume(ctx, amqp.BasicConsume{Queue: asgiDeadLetters})
	}
	if err != nil {
		return fmt.Errorf("declaring and consuming %q: %w", asgiDeadLetters, err)
	}
	w.l.goBackground(func() {
		// Ends with the connection (Close, or lost: the next call dials
		// again and sets up a new consumer).
		for {
			d, err := c.Next(context.Background())
			if d == nil {
				backgroundConsumerEnded(conn, err)
				return
			}
			if err != nil {
				// Its headers (x-death) cannot be read: take it and go on,
				// rather than let one foreign message stop the dead letters.
				d.Ack(amqp.AckOptions{})
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			// Acknowledged first, as Python does: a dead letter is acted on
			// at most once.
			if d.Ack(amqp.AckOptions{}) == nil {
				w.onDeadLetter(ctx, act, d)
			}
			cancel()
		}
	})
	return nil
}

// onDeadLetter is Protocol.on_dead_letter, by the most recent death of the
// message (x-death[0]):
//   - an expiry marker expired: the membership lapsed, discard it;
//   - a channel message expired unread: remove the channel from every
//     group (delete its membership queue, or its exchange with all its
//     group bindings);
//   - a marker pushed out by a newer one: nothing;
//   - a group message dead-lettered by a process-specific member's
//     membership queue (x-max-length 0): forward it to the member's channel.
//
// Its actions are best effort, as in Python: a failure leaves the
// membership to its own expiry.
func (w *asgiWire) onDeadLetter(ctx context.Context, act *amqp.Channel, d *amqp.Delivery) {
	queue, reason := lastDeath(d.Headers)
	marker := strings.HasPrefix(queue, asgiMarkerPrefix)
	switch {
	case reason == "expired" && marker:
		// Without Fernet's time check: a marker is GroupExpiry old, and
		// Python's expiry+10 s check would refuse it whenever GroupExpiry
		// is longer (its membership would then never lapse).
		m, err := w.l.cfg.codec.decodeAt(d.Body, 0)
		if err != nil {
			return
		}
		group, _ := m["group"].(string)
		channel, _ := m["channel"].(string)
		if checkPyGroup(group) == nil && w.checkChannel(channel, useGroup) == nil {
			w.unbind(ctx, act, group, channel)
		}
	case reason == "expired" && !marker:
		if strings.Contains(queue, "!") {
			if local, ok := headerString(d.Headers, "asgi_channel"); ok {
				act.QueueDelete(ctx, amqp.QueueDelete{Queue: queue + local})
			}
		} else if queue != "" {
			act.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: queue})
		}
	case reason == "maxlen" && marker:
	case reason == "maxlen" && strings.Contains(queue, "!"):
		act.Publish(ctx, amqp.Publishing{RoutingKey: asgiQueue(queue), Properties: w.properties(queue), Body: d.Body})
	}
}

// lastDeath returns the queue and the reason of a dead letter's most recent
// death.
func lastDeath(h amqp.Table) (queue, reason string) {
	deaths, _ := h["x-death"].([]any)
	if len(deaths) == 0 {
		return "", ""
	}
	var death map[string]any
	switch t := deaths[0].(type) {
	case amqp.Table:
		death = t
	case map[string]any:
		death = t
	}
	queue, _ = headerString(death, "queue")
	reason, _ = headerString(death, "reason")
	return queue, reason
}
