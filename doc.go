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
// heartbeat timeout) ends the connection and everything on it.
//
// # Publishing
//
// [Channel.Publish] returns a [*Confirmation] that is never nil. After
// [Channel.ConfirmSelect], Confirmation.Wait reports the server's ack, nack
// ([ErrNacked]) or return of a mandatory unroutable message ([ErrReturned]).
// [Channel.OnAck], [Channel.OnNack] and [Channel.OnReturn] register listeners.
// Publishing waits while the server blocks the connection (connection.blocked,
// see [Connection.OnBlocked]), bounded by ctx.
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
// Each delivery is a new allocation unless the consumer was started with
// [ConsumerOptions].Recycle: then the application may hand a delivery back
// with [Delivery.Release] when done with it, and its memory serves a later
// message. A released delivery must not be used again.
//
// # Callbacks
//
// Listeners (OnBlocked, OnAck, OnNack, OnReturn, OnCancel, OnError, OnFlow)
// run in order on one goroutine per connection, never on the goroutine that
// reads the socket: a slow listener delays later callbacks but never loses
// an event and never stalls replies, deliveries or heartbeats.
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
package amqp

//go:generate go run ./cmd/specgen -in spec/amqp0-9-1.extended.xml -out methods_gen.go
