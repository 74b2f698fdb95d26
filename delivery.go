package amqp

import (
	"context"
	"log/slog"
)

// Delivery is a message received from the server: pushed to a consumer
// (basic.deliver) or fetched with [Channel.Get] (basic.get-ok).
type Delivery struct {
	ConsumerTag string // the consumer it was delivered to; "" for Get
	DeliveryTag uint64 // the channel-scoped tag that acknowledges it
	Exchange    string // the exchange it was published to
	RoutingKey  string // the routing key it was published with

	// MessageCount is, for Get, how many messages remained in the queue.
	MessageCount uint32
	Redelivered  bool // it was delivered before and not acknowledged

	// Packed next to the two fields above, so that a Delivery with a small
	// body fits a smaller allocation size class.
	noAck    bool // the server considers it acknowledged already
	reusable bool // its consumer has ConsumerOptions.Recycle: Release hands it back
	released bool // Release handed it back; set until the reader reuses it

	Properties
	Body []byte

	// epoch names the channel and the span of delivery tags the delivery
	// arrived in; acknowledgements from an older one are stale. One pointer
	// rather than a channel and a counter keeps room for err in the same
	// allocation size classes.
	epoch *epoch
	err   *ContentError // the content header could not be decoded; see Err
}

// epoch is one span of a channel's delivery tags. The server numbers
// deliveries afresh after a reopen, a basic.recover or a requeueing
// tx.rollback, and the channel then starts a new epoch.
type epoch struct{ ch *Channel }

// Err returns nil for a normal delivery, and a [*ContentError] when the
// message's content header could not be decoded: the delivery then holds the
// properties that came before the fault and the whole body, and must still
// be settled. Next and Get return the same error alongside the delivery.
func (d *Delivery) Err() error {
	if d.err == nil {
		return nil
	}
	return d.err
}

// logMalformed logs a message whose content header could not be decoded
// (Warn), as it is handed to the application or rejected for it. The raw
// header is not logged: it may hold application data.
func (ch *Channel) logMalformed(d *Delivery, what string) {
	log := ch.conn.log
	if log == nil || d.err == nil {
		return
	}
	log.LogAttrs(context.Background(), slog.LevelWarn, "amqp: malformed message "+what,
		slog.Int("channel", int(ch.id)), slog.String("consumer_tag", d.ConsumerTag),
		slog.Uint64("delivery_tag", d.DeliveryTag), slog.String("exchange", d.Exchange),
		slog.String("routing_key", d.RoutingKey), slog.Int("body_size", len(d.Body)),
		slog.Any("error", d.err))
}

// Return is, like Delivery, a message the reader assembles. It is declared
// here, below the files that handle it (return.go, confirm.go, tracer.go),
// so that none of them needs another.

// Return is a message the server returned (basic.return) because it was
// published with Mandatory and could not be routed, with the reason.
type Return struct {
	ReplyCode  ReplyCode // such as 312 NO_ROUTE
	ReplyText  string
	Exchange   string
	RoutingKey string
	Properties
	Body []byte

	// Err is a [*ContentError] when the returned message's content header
	// could not be decoded: Properties then holds what came before the fault.
	Err error
}
