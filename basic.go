package amqp

import (
	"context"
)

// Qos sets the prefetch limits (basic.qos): how many unacknowledged
// deliveries (PrefetchCount) or bytes (PrefetchSize) the server sends before
// waiting for acknowledgements. RabbitMQ supports only PrefetchSize 0: any
// other value makes it close the whole connection with 540 NOT_IMPLEMENTED. With Global false,
// RabbitMQ applies the limit to each consumer started afterwards on the
// channel; with Global true, to the channel as a whole. The setting is
// re-applied when the channel is reopened after a channel error.
func (ch *Channel) Qos(ctx context.Context, args BasicQos) error {
	_, err := ch.call(ctx, &args, callOpts{})
	return err
}

// Get fetches one message from a queue (basic.get). It returns ErrEmpty when
// the queue has none. With NoAck the server considers the message
// acknowledged at once; otherwise acknowledge it like a consumer's delivery.
func (ch *Channel) Get(ctx context.Context, args BasicGet) (*Delivery, error) {
	// If ctx ends before the reply, the message the server hands out anyway
	// is given back (rejected with requeue), not left unacknowledged until
	// the channel closes. The hook and the caller meet under ch.mu.
	var (
		abandoned bool      // the caller gave up; guarded by ch.mu
		got       *Delivery // what get-ok brought, if the hook ran first; guarded by ch.mu
	)
	giveBack := func(d *Delivery) { // ch.mu held
		if d != nil && !d.noAck {
			ch.requeueLocked(d)
		}
	}
	r, err := ch.call(ctx, &args, callOpts{hook: func(r callResult) {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		got = r.msg
		if abandoned {
			giveBack(got)
		}
	}})
	if err != nil {
		ch.mu.Lock()
		abandoned = true
		giveBack(got) // get-ok arrived just as ctx ended: the caller never sees it
		ch.mu.Unlock()
		return nil, err
	}
	if r.msg == nil {
		return nil, ErrEmpty
	}
	if ch.traces != nil {
		ch.traceReceived(ctx, r.msg)
	}
	if r.msg.err != nil {
		ch.logMalformed(r.msg, "handed out")
	}
	return r.msg, r.msg.Err() // a ContentError comes with its message, to be settled
}

// gotMessage fills in a basic.get-ok's delivery on the reader goroutine,
// before it is handed to the waiting Get.
func (ch *Channel) gotMessage(m *BasicGetOk, d *Delivery) {
	d.DeliveryTag, d.Redelivered = m.DeliveryTag, m.Redelivered
	d.Exchange, d.RoutingKey, d.MessageCount = m.Exchange, m.RoutingKey, m.MessageCount
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if p := ch.calls.peek(); p != nil {
		if get, ok := p.req.(*BasicGet); ok {
			d.noAck = get.NoAck
		}
	}
	d.epoch = ch.epoch.Load()
	ch.settle.received(m.DeliveryTag, d.noAck)
}

// Recover asks the server to redeliver every unacknowledged message on the
// channel (basic.recover with Requeue true) and waits for recover-ok. The
// redeliveries carry new delivery tags: acknowledging a delivery received
// before Recover returns ErrStaleDelivery. RabbitMQ does not support Requeue
// false (redelivery to the same consumer) and closes the connection with 540
// NOT_IMPLEMENTED.
func (ch *Channel) Recover(ctx context.Context, args BasicRecover) error {
	_, err := ch.call(ctx, &args, callOpts{})
	return err
}

// RecoverAsync is the deprecated asynchronous form of Recover
// (basic.recover-async): nothing answers it.
func (ch *Channel) RecoverAsync(ctx context.Context, args BasicRecoverAsync) error {
	_, err := ch.call(ctx, &args, callOpts{})
	return err
}

// Flow asks the server to pause (false) or resume (true) deliveries to this
// channel's consumers (channel.flow). RabbitMQ does not support pausing and
// closes the channel with 540 NOT_IMPLEMENTED.
func (ch *Channel) Flow(ctx context.Context, args ChannelFlow) (active bool, err error) {
	ok, err := callTyped[ChannelFlowOk](ctx, ch, &args)
	if err != nil || ok == nil {
		return false, err
	}
	return ok.Active, nil
}
