package amqp

import "context"

// The exchange and queue methods. Each sends its generated argument struct
// and returns the server's reply, bounded by ctx. Cancelling ctx after the
// request was sent does not undo it: the server still declares, binds or
// deletes, and the reply is discarded when it arrives.
//
// With NoWait set the server sends no reply: the call returns once the
// request is queued, with a zero result. An error the server finds in it
// arrives later as a channel error: the channel is reopened, [Channel.OnError]
// listeners are told, and calls already waiting for a reply at that moment
// return the *Error (calls made afterwards run on the reopened channel).
//
// With Config.Recovery on, successful declarations, bindings and deletions
// are recorded so that a connection recovery can restore the topology;
// passive declarations are not recorded, and a deletion forgets the entity
// and its bindings.

// The exchange types every RabbitMQ has, for ExchangeDeclare's Type. Plugins
// add others (such as "x-consistent-hash"), named by their own strings.
const (
	ExchangeDirect  = "direct"  // routes to the queues bound with the message's routing key
	ExchangeFanout  = "fanout"  // routes to every bound queue, ignoring the routing key
	ExchangeTopic   = "topic"   // routes by pattern: "*" matches one dot-separated word, "#" any number
	ExchangeHeaders = "headers" // routes by header values (x-match all or any), ignoring the routing key
)

// ExchangeDeclare declares an exchange (exchange.declare): Type is
// [ExchangeDirect], [ExchangeFanout], [ExchangeTopic], [ExchangeHeaders] or a
// plugin's type; Passive only checks that it exists (404 NOT_FOUND if not).
func (ch *Channel) ExchangeDeclare(ctx context.Context, args ExchangeDeclare) error {
	_, err := ch.call(ctx, &args, callOpts{record: true})
	return err
}

// ExchangeDelete deletes an exchange (exchange.delete); with IfUnused, only
// if it has no bindings (406 PRECONDITION_FAILED otherwise).
func (ch *Channel) ExchangeDelete(ctx context.Context, args ExchangeDelete) error {
	_, err := ch.call(ctx, &args, callOpts{record: true})
	return err
}

// ExchangeBind binds exchange Destination to exchange Source (exchange.bind,
// a RabbitMQ extension): messages routed by Source with a matching routing key
// go on to Destination.
func (ch *Channel) ExchangeBind(ctx context.Context, args ExchangeBind) error {
	_, err := ch.call(ctx, &args, callOpts{record: true})
	return err
}

// ExchangeUnbind removes an exchange-to-exchange binding (exchange.unbind).
func (ch *Channel) ExchangeUnbind(ctx context.Context, args ExchangeUnbind) error {
	_, err := ch.call(ctx, &args, callOpts{record: true})
	return err
}

// QueueDeclare declares a queue (queue.declare) and returns its name (chosen
// by the server when args.Queue is empty), message count and consumer count.
// Passive only checks that the queue exists (404 NOT_FOUND if not).
// Redeclaring an existing queue with other properties or arguments fails with
// 406 PRECONDITION_FAILED. Arguments carry RabbitMQ's options such as
// "x-queue-type", "x-max-length", "x-message-ttl" and "x-dead-letter-exchange".
// Names starting with "amq." are reserved: declaring one that does not exist
// (other than passively) fails with 403 ACCESS_REFUSED.
func (ch *Channel) QueueDeclare(ctx context.Context, args QueueDeclare) (QueueDeclareOk, error) {
	r, err := ch.call(ctx, &args, callOpts{record: true})
	if err != nil || r.m == nil {
		return QueueDeclareOk{}, err
	}
	return *r.m.(*QueueDeclareOk), nil
}

// QueueBind binds a queue to an exchange (queue.bind).
func (ch *Channel) QueueBind(ctx context.Context, args QueueBind) error {
	_, err := ch.call(ctx, &args, callOpts{record: true})
	return err
}

// QueueUnbind removes a queue binding (queue.unbind; it has no no-wait form).
func (ch *Channel) QueueUnbind(ctx context.Context, args QueueUnbind) error {
	_, err := ch.call(ctx, &args, callOpts{record: true})
	return err
}

// QueuePurge removes every message that is not awaiting acknowledgement from
// a queue (queue.purge) and returns how many it removed.
func (ch *Channel) QueuePurge(ctx context.Context, args QueuePurge) (uint32, error) {
	ok, err := callTyped[QueuePurgeOk](ctx, ch, &args)
	if err != nil || ok == nil {
		return 0, err
	}
	return ok.MessageCount, nil
}

// QueueDelete deletes a queue (queue.delete) and returns how many messages
// it held. IfUnused and IfEmpty make it fail with 406 PRECONDITION_FAILED
// when the queue has consumers or messages. Consumers of a deleted queue are
// cancelled by the server (see [ConsumerOptions.OnCancel]).
func (ch *Channel) QueueDelete(ctx context.Context, args QueueDelete) (uint32, error) {
	r, err := ch.call(ctx, &args, callOpts{record: true})
	if err != nil || r.m == nil {
		return 0, err
	}
	return r.m.(*QueueDeleteOk).MessageCount, nil
}

// queueExists checks with a passive declare, on a channel of its own so
// that a 404 closes that channel and not the consumer's.
func (ch *Channel) queueExists(ctx context.Context, queue string) error {
	tmp, err := ch.conn.channelWhenUp(ctx, libraryChannel)
	if err != nil {
		return err
	}
	defer tmp.Close(context.WithoutCancel(ctx))
	_, err = tmp.call(ctx, &QueueDeclare{Queue: queue, Passive: true}, callOpts{})
	return err
}
