// Package amqp is an AMQP 0-9-1 client for RabbitMQ, written from the
// protocol specification: every method takes a [context.Context] and its
// generated argument struct and returns its result.
//
//	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
//	ch, err := conn.Channel(ctx)
//	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "jobs", Durable: true})
//	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("hello")})
//
// # Connections and channels
//
// [Dial] parses a URL ([ParseURL]) and [DialConfig] takes a [Config]; both try
// the addresses of a cluster in order until one completes the handshake. A
// [Connection] multiplexes [Channel]s; both are safe for concurrent use, and
// several goroutines may call methods on one channel at once. Connection,
// Channel and [Consumer] report their end like a context: Done returns a
// channel closed at the end and Err says why.
//
// # Context support
//
// Every method that talks to the server takes a ctx. Cancelling it while the
// call waits — for room in the write queue, for the server to unblock the
// connection, or for the reply — returns promptly with an error that wraps
// ctx's error. A frame whose write has begun is never cut in half. When ctx
// ends after a request was sent, the server may still act on it (declare the
// queue, bind, delete); its late reply is read and dropped, never handed to
// the next call, and the channel stays usable.
//
// The exceptions are [Delivery.Ack], [Delivery.Nack] and [Delivery.Reject]:
// they never wait (there is no reply, and an acknowledgement is too small to
// be held back by the write queue), so they take no ctx, and a delivery is
// settled the same way after the context it was consumed with has ended.
//
// # Errors
//
// Protocol errors are [*Error] values with the reply code, reason, failing
// method, and whether the server sent them and whether they closed the
// connection. errors.Is matches them against reply-code sentinels such as
// [ErrNotFound] and [ErrPreconditionFailed]. Client-side conditions have
// their own sentinels ([ErrClosed], [ErrHeartbeatTimeout], [ErrFrameTooLarge],
// [ErrBodyTooLarge], ...) and never borrow a server code. Values that cannot
// be encoded return a [*FieldError] and send nothing. [Recoverable] tells
// whether a retry may succeed.
//
// When the server closes a channel with a soft error (404, 406, ...), the
// call that caused it returns the *Error, and the channel is reopened on the
// same number with its qos and confirm mode re-applied: the same *Channel
// serves the next call. Consumers on it end with the error, and outstanding
// publisher confirmations resolve with it. A hard error (or an I/O failure or
// heartbeat timeout) ends the connection and everything on it, unless
// recovery is on.
//
// A message that other clients can put on the wire but this client cannot
// decode costs that message, never the connection. Timestamps ('T' in a
// table, and the timestamp property) are read as signed seconds, as other
// clients write them, so a date before 1970 arrives as such. When a content
// header (its properties or header table) still cannot be decoded but the
// framing around it is intact (frame sizes, frame-end octets, the
// method/header/body sequence), the message is delivered anyway, with every
// property that came before the fault and its whole body, together with a
// [*ContentError] (errors.Is [ErrMalformedContent]; the raw header bytes are
// in it): [Consumer.Next] returns the non-nil *Delivery and the error, the
// [Consumer.Deliveries] loop yields both and goes on, [Channel.Get] returns
// both, and a [Return] carries it in Err. Settle such a delivery like any
// other, typically with Reject or Nack without requeue so that the queue's
// dead-letter exchange keeps it; [ConsumerOptions.RejectMalformed] makes a
// consumer do that itself. [Delivery.Err] reports the error on the delivery.
// Only broken framing, after which the stream cannot be trusted, and a body
// over [Config].MaxBodySize close the connection (with a connection.close
// naming the fault: 501, 502 or 505); with recovery on, that too is
// recovered (see Recovery).
//
// # Recovery
//
// With [Config.Recovery] set (or recovery=on in the URL), a connection lost
// to an I/O error, a heartbeat timeout, or a server close that a new
// connection may not meet again (320 CONNECTION_FORCED, 506, 541) is
// replaced behind the same *Connection, *Channel and *Consumer values. The
// client reconnects with jittered exponential backoff, without a limit unless
// [RecoveryConfig].MaxAttempts sets one, trying every address of
// Config.Addrs in turn, each try bounded by [RecoveryConfig].AttemptTimeout
// (5 s in the first attempt by default, doubling with each attempt up to
// Config.ConnectionTimeout), so that a node silenced by a partition does not
// hold the recovery back. A connection this client closed because the server sent
// something it could not parse (broken framing) is recovered too, with the
// cause in [RecoveryStarted], unless the same protocol error ends
// ProtocolErrorRepeats (3) freshly recovered connections in a row at once;
// then [RecoveryFailed] is reported and the connection ends with the error.
// Close, a fatal refusal on reconnecting (403 ACCESS_REFUSED, 530
// NOT_ALLOWED, bad credentials) or a protocol error the server reports (a
// connection.close naming this client's fault) ends the connection instead,
// with that error.
//
// What is recovered, in this order:
//   - the topology declared through the connection: exchanges, queues,
//     queue bindings and exchange-to-exchange bindings, in declaration
//     order. Deleting an entity (or unbinding) forgets it, with its
//     bindings, and so does cancelling the last consumer (on this
//     connection) of an auto-delete queue, which the broker then deletes;
//     passive declarations are not recorded. A server-named queue
//     is declared again with an empty name, and its bindings and consumers
//     follow the new name (told as [RecoveryQueueRenamed]). Set
//     SkipTopology to leave the topology to the application.
//   - every channel, on its old number, with its qos, confirm mode and tx
//     mode; then its consumers, with the same consumer tags and arguments,
//     delivering into the same *Consumer.
//   - with Republish, the publishes that were unconfirmed at the loss, in
//     order.
//
// What each handle reports for the work in flight at the loss:
//   - a call waiting for its reply returns an error matching ErrClosed and
//     the cause (such as ErrConnectionLost); the server may or may not have
//     acted on it. [Recoverable] reports true for it.
//   - an unconfirmed publish's [Confirmation] resolves with an error matching
//     [ErrPublishLost], or with Republish is published again and resolves
//     with the new ack (its DeliveryTag changes); should the server close
//     the channel while they are resent, those resent so far resolve with
//     its error, as on any channel error. Either way the message may
//     already be in the queue: consumers must tolerate duplicates. A publish
//     outside confirm mode that was queued before the loss may be lost
//     without a trace; use confirms to know.
//   - a delivery received before the loss cannot be acknowledged any more:
//     Ack, Nack and Reject return [ErrStaleDelivery] (the server has
//     requeued it and will deliver it again). Buffered deliveries that need
//     an acknowledgement are dropped from the consumer for the same reason.
//   - a transaction with uncommitted work is lost: the next
//     [Channel.TxCommit] returns [ErrTransactionLost].
//   - a channel that could not be restored, and a consumer whose queue is
//     gone, end with the error ([RecoveryEntityFailed]).
//
// Calls made while the connection is being recovered wait for it, bounded by
// their ctx, or with FailFast return [ErrRecovering] at once. Done and Err of
// the Connection, Channel and Consumer report only the final end;
// [Connection.Recovering] and [Connection.IsAlive] tell the state, and
// [Connection.OnRecovery] listeners are told each step. Recovery
// authenticates again with the Config's mechanisms, using the secret of the
// last [Connection.UpdateSecret] as the PLAIN or AMQPLAIN password; a custom
// [Mechanism] for expiring tokens should fetch the current one.
//
// A consumer the server cancels (its queue was deleted, or its node went
// down) can subscribe again by itself: see [ConsumerOptions].Resubscribe.
//
// # Publishing
//
// [Channel.Publish] returns a [*Confirmation] that is never nil. After
// [Channel.ConfirmSelect], Confirmation.Wait reports the server's ack, nack
// ([ErrNacked]) or return of a mandatory unroutable message ([ErrReturned]).
// [Channel.OnAck], [Channel.OnNack] and [Channel.OnReturn] register listeners.
// Publishing waits while the server blocks the connection (connection.blocked,
// see [Connection.OnBlocked]), bounded by ctx. [Channel.WaitConfirms] is a
// publish barrier: it waits until every publish made before it has its
// outcome, and returns a [*ConfirmsError] listing every failure not yet
// reported. Set [Properties].DeliveryMode to [Persistent] for messages that
// must survive a broker restart, and declare exchanges with [ExchangeDirect],
// [ExchangeFanout], [ExchangeTopic] or [ExchangeHeaders].
//
// # Consuming
//
// [Channel.Consume] returns a [*Consumer]; read deliveries with
// [Consumer.Next] or range over [Consumer.Deliveries]. A consumer's buffer is
// bounded; see [Consumer] for the backpressure rules. Acknowledge with
// [Delivery.Ack], [Delivery.Nack] or [Delivery.Reject]: acknowledging a
// no-ack delivery, acknowledging twice, or acknowledging a delivery from
// before its channel was reopened is a local typed error, never a 406 that
// closes the channel. When the server cancels a consumer (its queue was
// deleted), [ConsumerOptions].OnCancel is called, or the consumer ends with
// [ErrCancelledByServer].
//
// A range loop over Deliveries ends without an error when the application
// ended the consumer itself: [Consumer.Cancel], [Channel.Close] or
// [Connection.Close], from any goroutine. Any other end (a channel error,
// the server closing the connection, a lost connection without recovery, a
// server cancel without OnCancel) is yielded as an error, then the loop
// ends. [EndedByApplication] applies the same rule to the errors of
// [Consumer.Next] and the Err methods.
//
// When a consumer is its connection's only one, the reader goroutine lends
// it the socket once its Next waits: Next then reads and dispatches frames
// on the application's goroutine until it has deliveries, with no hand-off
// between goroutines per socket read, which is where most of a consumer's
// CPU went. Nothing changes for the application: Next is still bounded by
// its ctx, other channels' calls, confirmations and the server's frames are
// still read (whoever waits for them takes the socket back, and so does a
// timer after 1 ms in which nobody read it), and backpressure still holds.
// Lending pauses while a call, a Close, a Confirmation.Wait or a publish
// held by the server waits on the same connection, and with a second
// consumer: a service that makes calls or waits for confirmations all the
// time on its consumer's connection gets the most from consuming on a
// connection of its own.
//
// # Serving a queue with handlers
//
// [Channel.Serve] runs a [Handler] for each delivery on a pool of at most
// [ServeOptions].Workers goroutines, with a prefetch that keeps them fed.
// A handler that returns nil has its delivery acked; one that returns an
// error has it rejected with requeue, or without (dead-lettered) when the
// error wraps [ErrReject] (ServeOptions.Requeue changes that policy); a
// panic is recovered, reported to OnError as a [*PanicError] and settled as
// an error. [Service.Shutdown] drains gracefully, bounded by its ctx: it
// stops taking deliveries, cancels the consumer, hands back the prefetched
// ones, and lets the running handlers finish and settles them; when its ctx
// ends first, the handlers' ctx ends. A Service runs on across connection
// recovery and, with Resubscribe, server cancels.
//
// Each delivery is a new allocation unless the consumer was started with
// [ConsumerOptions].Recycle: then the application may hand a delivery back
// with [Delivery.Release] when done with it, and its memory serves a later
// message. A released delivery must not be used again.
//
// # Callbacks
//
// Listeners (OnBlocked, OnAck, OnNack, OnReturn, OnCancel, OnError, OnFlow),
// and the tracer and log records of what the reader notices, run in order on one goroutine per connection, never on the goroutine that
// reads the socket: a slow listener delays later callbacks but never loses
// an event and never stalls replies, deliveries or heartbeats.
//
// # Observability
//
// [Config].Logger takes a *slog.Logger: connection opened and closed,
// recovery steps, channel errors, blocked and unblocked, and malformed
// messages, at the levels a user expects (Info for the normal life, Warn
// for trouble the client handles, Error when the connection is lost for
// good). Nothing is logged per message except malformed ones, and no
// record holds a password or a message body. Nil logs nothing.
//
// [Config].Tracer takes one value implementing any of the tracer interfaces,
// in the style of pgx v5: [ConnectTracer], [PublishTracer] (which may add
// headers for trace propagation, and ends with the confirmation's outcome),
// [DeliveryTracer] (from Next or Get to Ack, Nack, Reject or Release; the
// context it returns is [Delivery.TraceContext]), [CallTracer] (synchronous
// methods), [ChannelErrorTracer], [RecoveryTracer], [BlockedTracer] and
// [ReturnTracer]. Each interface documents the goroutine its hooks run on;
// none runs on the reader. Without a tracer the hooks cost one nil check
// and no allocation. The module github.com/amqp-go/amqp/otelamqp builds
// OpenTelemetry spans (with W3C trace context in message headers) and
// metrics on these hooks, so this module needs no OpenTelemetry package.
//
// # Heartbeats
//
// Heartbeats are negotiated in connection.tune (zero on one side means the
// other's value, else the smaller). The client sends one when it has written
// nothing for half the interval and ends the connection with
// [ErrHeartbeatTimeout] when it has read nothing for two intervals.
// [Connection.SendHeartbeat] and [Connection.IsAlive] are there for
// applications with their own scheme.
//
// # Testing
//
// Package amqptest is a scriptable fake AMQP server for frame-level tests of
// code that uses this client.
//
// # Examples by task
//
// The runnable examples (they need a RabbitMQ on localhost) are shown with
// what they use; by task:
//   - connecting: the example of [Dial].
//   - a work queue by hand, with prefetch, persistent tasks and acks: the
//     "workQueue" example of [Channel.Consume].
//   - a work queue with a pool of handlers and a graceful shutdown: the
//     example of [Channel.Serve].
//   - RPC over direct reply-to: the "directReplyTo" example of
//     [Channel.Consume].
//   - fan-out (publish/subscribe): the "fanout" example of [Channel.QueueBind].
//   - topic routing: the "topic" example of [Channel.QueueBind].
//   - exchange-to-exchange routing: the example of [Channel.ExchangeBind].
//   - publisher confirms, one by one: the "confirms" example of
//     [Channel.Publish].
//   - a publish barrier for a batch: the example of [Channel.WaitConfirms].
//   - unroutable mandatory messages: the example of [Channel.OnReturn].
//   - how a consume loop ends: the example of [Consumer.Deliveries].
//   - server cancels: the "onCancel" example of [ConsumerOptions].
//   - connection recovery: the "recovery" example of [Config].
//   - recovery tuned from the URL: the "recovery" example of [ParseURL].
//   - allocation-free consuming: the "recycle" example of [ConsumerOptions].
//   - a fake server for tests: the example of amqptest.Server.
//   - a channel layer for Django Channels, and one that talks to Python's
//     channels_rabbitmq: the examples of the layer module.
//   - tracing and metrics with OpenTelemetry: the examples of the otelamqp
//     module.
//   - raw frames against a live broker: the example of package amqpraw.
//   - checking a broker's conformance: the example of package conformance.
package amqp

//go:generate go run ./cmd/specgen -in spec/amqp0-9-1.extended.xml -out methods_gen.go
