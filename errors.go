package amqp

import (
	"errors"
	"fmt"
	"strings"
)

// Errors the server reports, and which errors are worth a retry.

// Error is a protocol error: a connection.close or channel.close, sent by the
// server (Server is true) or by this client when it detects a protocol
// violation. Code is the AMQP reply code; errors.Is matches it against the
// reply-code sentinels such as [ErrNotFound] whatever the Reason text says.
type Error struct {
	Code     ReplyCode // the AMQP reply code, e.g. 404
	Reason   string    // the reply text, e.g. "NOT_FOUND - no queue 'jobs' in vhost '/'"
	ClassID  uint16    // the class of the method that caused it, 0 if none
	MethodID uint16    // the method that caused it, 0 if none

	// Server reports whether the server sent the close (true) or the client
	// decided it (false).
	Server bool

	// Connection reports whether the error closed the whole connection
	// (a hard error) rather than one channel (a soft error).
	Connection bool
}

// Error returns a message naming the scope, code, reason and failing method.
func (e *Error) Error() string {
	scope := "channel"
	if e.Connection {
		scope = "connection"
	}
	origin := "client"
	if e.Server {
		origin = "server"
	}
	msg := fmt.Sprintf("amqp: %s closed by %s: %d %s", scope, origin, e.Code, e.Reason)
	if m := e.Method(); m != "" {
		msg += " (in " + m + ")"
	}
	return msg
}

// Method returns the name of the method that caused the error, such as
// "queue.declare", or "" when the error names none.
func (e *Error) Method() string {
	if e.ClassID == 0 && e.MethodID == 0 {
		return ""
	}
	return methodName(e.ClassID, e.MethodID)
}

// Recoverable reports whether the error's reply code may go away on retry;
// see [Recoverable].
func (e *Error) Recoverable() bool { return e.Code.Recoverable() }

// Is reports whether target is an *Error with the same reply code, so
// errors.Is(err, ErrNotFound) holds for any 404.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Recoverable reports whether err is temporary: retrying the operation on a
// new channel (for a channel error) or a new connection (for a connection
// error) may succeed without changing the request. Protocol errors that a
// retry would repeat (403 access refused, 404 not found, 406 precondition
// failed, 530 not allowed, ...) and misuse of the API are not recoverable;
// network failures, heartbeat timeouts, forced closes (320), resource
// limits (311, 313, 405, 506), a call refused while the connection recovers
// (ErrRecovering), a publish lost in a reconnect (ErrPublishLost), and a
// call lost because this client closed the connection over something the
// server sent that it could not parse are.
func Recoverable(err error) bool {
	if err == nil {
		return false
	}
	// An error that knows says so: *Error by its code, and the protocol
	// error this client closed a connection with (recovery replaces such a
	// connection, so the call may well succeed on the next).
	var r interface{ Recoverable() bool }
	if errors.As(err, &r) {
		return r.Recoverable()
	}
	// Then a client-side sentinel made with temporary says yes.
	var t *temporaryError
	return errors.As(err, &t)
}

// temporaryError is a client-side sentinel for a failure that the next
// connection may well not meet again: Recoverable finds it in the chain.
// It has no Recoverable method of its own, so that an *Error (or another
// error that knows) wrapped with it still decides first, as it is asked
// first.
type temporaryError struct{ msg string }

func (e *temporaryError) Error() string { return e.msg }

func temporary(msg string) error { return &temporaryError{msg} }

// Recoverable reports whether an error with this code may go away on retry.
func (c ReplyCode) Recoverable() bool {
	switch c {
	case CodeContentTooLarge, CodeNoConsumers, CodeResourceLocked, // channel
		CodeConnectionForced, CodeResourceError: // connection
		return true
	}
	return false
}

// Connections: the socket, dialing, the handshake, the codec's limits.

// Client-side errors. They never borrow a server reply code.
var (
	// ErrClosed is returned by operations on a connection, channel or
	// consumer that is closed. It is wrapped together with the cause of the
	// close where there is one; after the application's own Channel.Close
	// or Connection.Close it is ErrClosed itself (see [EndedByApplication]).
	ErrClosed = errors.New("amqp: closed")

	// ErrConnectionLost reports an I/O failure on the connection's socket.
	ErrConnectionLost = temporary("amqp: connection lost")

	// ErrHeartbeatTimeout reports that nothing was read from the server for
	// two heartbeat intervals, so the peer is considered dead.
	ErrHeartbeatTimeout = temporary("amqp: heartbeat timeout: nothing received for two heartbeat intervals")

	// ErrFrameTooLarge reports an inbound or outbound frame larger than the
	// negotiated frame_max. An inbound one is rejected before its payload is read.
	ErrFrameTooLarge = errors.New("amqp: frame larger than the negotiated frame_max")

	// ErrBodyTooLarge reports an inbound message body larger than
	// Config.MaxBodySize. It is rejected before the body is buffered.
	ErrBodyTooLarge = errors.New("amqp: message body larger than the configured maximum")

	// ErrMalformedFrame reports bytes that do not decode as AMQP: a bad frame
	// end octet, a truncated field, trailing bytes, an unknown frame type.
	ErrMalformedFrame = errors.New("amqp: malformed frame")

	// ErrUnknownMethod reports a method frame whose class and method ids are
	// not in the AMQP 0-9-1 specification.
	ErrUnknownMethod = errors.New("amqp: unknown method")

	// ErrShortstrTooLong reports a string longer than the 255 bytes a
	// shortstr (names, routing keys, consumer tags, ...) can hold.
	ErrShortstrTooLong = errors.New("amqp: string too long for a shortstr (max 255 bytes)")

	// ErrFieldTooLong reports a value longer than its wire type can carry,
	// other than a shortstr (see ErrShortstrTooLong).
	ErrFieldTooLong = errors.New("amqp: value too long for its field")

	// ErrUnsupportedType reports a field-table value whose Go type has no
	// AMQP encoding. See [Table] for the supported types.
	ErrUnsupportedType = errors.New("amqp: unsupported field table value type")
)

// DialError reports that no address of a cluster completed the handshake.
type DialError struct {
	Failures []error // one per address tried, in order, each naming its address
}

func (e *DialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "amqp: dial: all %d addresses failed", len(e.Failures))
	for _, f := range e.Failures {
		b.WriteString("; ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns every address's failure, so errors.Is and errors.As look at all of them.
func (e *DialError) Unwrap() []error { return e.Failures }

// ErrBlocked matches a [BlockedError]: a publish that gave up waiting because
// the server had blocked the connection.
var ErrBlocked = errors.New("amqp: connection blocked by the server")

// BlockedError reports that ctx ended while a publish waited for the server
// to unblock the connection. It matches ErrBlocked and ctx's error.
type BlockedError struct {
	Reason string // the server's reason, such as "low on memory"
	Err    error  // ctx's error
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("amqp: connection blocked by the server (%s): %v", e.Reason, e.Err)
}

// Unwrap lets errors.Is match both ErrBlocked and the context's error.
func (e *BlockedError) Unwrap() []error { return []error{ErrBlocked, e.Err} }

// ErrProtocolVersion reports that the server does not speak AMQP 0-9-1: it
// answered the protocol header with its own (see [ProtocolVersionError]).
var ErrProtocolVersion = errors.New("amqp: server does not support AMQP 0-9-1")

// ProtocolVersionError reports the protocol header a server sent back
// instead of connection.start. It matches ErrProtocolVersion.
type ProtocolVersionError struct {
	Header [8]byte // what the server sent, e.g. "AMQP\x00\x00\x09\x01" or "AMQP\x01\x01\x00\x0a"
}

func (e *ProtocolVersionError) Error() string {
	return fmt.Sprintf("amqp: server does not support AMQP 0-9-1; it offered protocol header %q", e.Header[:])
}

func (e *ProtocolVersionError) Is(target error) bool { return target == ErrProtocolVersion }

// ErrAuthentication reports that the server closed the connection during
// the handshake without saying why, which is how brokers that do not offer
// authentication_failure_close refuse credentials.
var ErrAuthentication = errors.New("amqp: server closed the connection during authentication (bad credentials?)")

// ErrAuthMechanism reports that the server offers none of the SASL
// mechanisms the client is configured for ([Config.SASL]). The error that
// wraps it lists both sides.
var ErrAuthMechanism = errors.New("amqp: no SASL mechanism in common with the server")

// URLError reports an AMQP URL that [ParseURL] cannot use. It names the part
// at fault and never contains the password; it does not repeat the URL.
type URLError struct {
	// Part is the part of the URL at fault: "URL", "scheme", "username",
	// "password", "userinfo", "host", "port", "vhost", "fragment", "query",
	// or "parameter " followed by a parameter's name, such as
	// "parameter heartbeat".
	Part string

	// Err says what is wrong with it.
	Err error
}

// Error returns "amqp: invalid URL: " followed by the part and the problem.
func (e *URLError) Error() string { return "amqp: invalid URL: " + e.Part + ": " + e.Err.Error() }

// Unwrap returns Err, so errors.Is(err, fs.ErrNotExist) finds a missing
// certificate file.
func (e *URLError) Unwrap() error { return e.Err }

// Content the client cannot decode or encode.

// ErrMalformedContent matches a [ContentError]: a message whose frames
// arrived intact but whose content header (its properties or header table)
// could not be decoded.
var ErrMalformedContent = errors.New("amqp: message content header cannot be decoded")

// ContentError describes a message whose content header could not be
// decoded although its framing was intact: the frame sizes, the frame-end
// octets and the method/header/body sequence were right, so the connection
// stays open and the message is handed to the application all the same,
// with every property that came before the fault decoded and the body whole.
// Causes seen through RabbitMQ 3.10 are a header table nested more than 64
// deep and a property flag bit that AMQP 0-9-1 does not define; a broker
// that checks less (or a proxy) may also pass an unknown table type tag or
// a flag word announcing more than the header holds.
//
// A consumer gets it from [Consumer.Next] (and [Consumer.Deliveries])
// together with the non-nil Delivery, which must still be settled: Reject or
// Nack it without requeueing to dead-letter it, or Ack it. [Channel.Get]
// returns it the same way, and a basic.return carries it in [Return].Err.
// [ConsumerOptions.RejectMalformed] makes a consumer reject such messages
// itself. errors.Is(err, ErrMalformedContent) matches it.
type ContentError struct {
	Method string // the content's method: "basic.deliver", "basic.get-ok" or "basic.return"
	Header []byte // the content header frame's payload as received, for logging or forensics
	Err    error  // what the decoder found; it matches ErrMalformedFrame
}

func (e *ContentError) Error() string {
	return "amqp: cannot decode the content header of a " + e.Method + " (" + e.Err.Error() + ")"
}

// Unwrap returns ErrMalformedContent and the decoder's error, so errors.Is
// matches either.
func (e *ContentError) Unwrap() []error { return []error{ErrMalformedContent, e.Err} }

// FieldError reports a value that could not be encoded, naming where it was:
// the method and field, and for tables the key path. It unwraps to one of
// ErrShortstrTooLong, ErrFieldTooLong or ErrUnsupportedType.
type FieldError struct {
	Field string // e.g. "queue.declare queue" or "basic.publish headers[x-retry]"
	Err   error
}

func (e *FieldError) Error() string { return "amqp: cannot encode " + e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// fieldError wraps err with the field it came from, extending an existing
// FieldError's path rather than nesting.
func fieldError(field string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: field + fe.Field, Err: fe.Err}
	}
	return &FieldError{Field: field, Err: err}
}

// Channels and their methods.

// ErrNoFreeChannel reports that every channel number up to channel_max is in use.
var ErrNoFreeChannel = errors.New("amqp: no free channel number (channel_max reached)")

// ErrEmpty is returned by [Channel.Get] when the queue has no message (basic.get-empty).
var ErrEmpty = errors.New("amqp: queue is empty")

// ErrTransactionLost reports a TxCommit after a connection
// recovery on a channel whose transaction had uncommitted publishes or
// acknowledgements when the connection was lost: the server discarded
// them. Nothing was committed: TxCommit rolls back what was done since the
// recovery too, so the channel is in transaction mode with an empty
// transaction, ready for the application to redo its work.
var ErrTransactionLost = errors.New("amqp: transaction lost in a reconnect: its uncommitted publishes and acknowledgements were discarded")

// Publishing and publisher confirms.

// ErrImmediateUnsupported reports a publish with Immediate set; see [Publishing].
var ErrImmediateUnsupported = errors.New("amqp: basic.publish immediate is not supported by RabbitMQ (it would close the connection with 540)")

var (
	// ErrNacked: the server refused responsibility for a message (basic.nack),
	// for example because a queue with x-overflow reject-publish was full.
	ErrNacked = errors.New("amqp: message nacked by the server")
	// ErrReturned matches a [*ReturnedError]: a mandatory message that the
	// server could not route and returned (basic.return).
	ErrReturned = errors.New("amqp: message returned by the server")
)

// ReturnedError reports a message the server returned instead of routing it.
// It matches ErrReturned and the return's reply code (such as ErrNoRoute).
type ReturnedError struct {
	Return Return
}

func (e *ReturnedError) Error() string {
	return fmt.Sprintf("amqp: message returned by the server: %d %s (exchange %q, routing key %q)",
		e.Return.ReplyCode, e.Return.ReplyText, e.Return.Exchange, e.Return.RoutingKey)
}

// Is matches ErrReturned and the reply-code sentinel of the return.
func (e *ReturnedError) Is(target error) bool {
	if target == ErrReturned {
		return true
	}
	t, ok := target.(*Error)
	return ok && t.Code == e.Return.ReplyCode
}

// ErrNoConfirmMode reports a [Channel.WaitConfirms] on a channel that is
// not in confirm mode: its publishes have no outcome to wait for.
var ErrNoConfirmMode = errors.New("amqp: channel is not in confirm mode (call ConfirmSelect first)")

// ConfirmsError is what [Channel.WaitConfirms] returns when publishes
// failed: every failed publish it reports, in the order their outcomes
// became known. errors.Is matches the error of any of them, so
// errors.Is(err, ErrNacked) tells whether one was nacked, and
// errors.Is(err, ErrPublishLost) whether one was lost in a reconnect.
type ConfirmsError struct {
	// Failed holds the failed publishes' Confirmations, the same values
	// Publish returned: Wait gives each one's error (ErrNacked, a
	// *ReturnedError, the channel's error, ErrPublishLost) and Returned the
	// returned message.
	Failed []*Confirmation
	// Omitted counts failures that were not kept: a channel keeps at most
	// 1024 failures between two WaitConfirms calls.
	Omitted int
}

// Error names how many publishes failed and the first failure.
func (e *ConfirmsError) Error() string {
	n := len(e.Failed) + e.Omitted
	if len(e.Failed) == 0 {
		return fmt.Sprintf("amqp: %d publishes failed", n)
	}
	first := e.Failed[0]
	if n == 1 {
		return fmt.Sprintf("amqp: publish %d failed: %v", first.DeliveryTag(), first.outcome())
	}
	return fmt.Sprintf("amqp: %d publishes failed; the first, %d: %v", n, first.DeliveryTag(), first.outcome())
}

// Unwrap returns the error of each failed publish in Failed.
func (e *ConfirmsError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, c := range e.Failed {
		errs[i] = c.outcome()
	}
	return errs
}

// Consuming, settling deliveries, serving with handlers.

var (
	// ErrConsumerCancelled ends a consumer that was cancelled by
	// [Consumer.Cancel], or by the server when ConsumerOptions.OnCancel
	// handled it. Deliveries range loops end without reporting it.
	ErrConsumerCancelled = errors.New("amqp: consumer cancelled")
	// ErrCancelledByServer ends a consumer that the server cancelled (its
	// queue was deleted, or the queue's node went down) when no OnCancel
	// callback was given.
	ErrCancelledByServer = errors.New("amqp: consumer cancelled by the server (queue deleted or unavailable)")
)

// ErrNoWaitConsume reports a Consume call with NoWait set.
var ErrNoWaitConsume = errors.New("amqp: basic.consume with no-wait is not supported by Consume; the consumer needs consume-ok")

// EndedByApplication reports whether err, returned by [Consumer.Next] or
// found in an Err method, means that the application ended the consumer,
// channel or connection itself: [ErrConsumerCancelled] (Consumer.Cancel, or a
// server cancel that ConsumerOptions.OnCancel was told of), or ErrClosed
// itself, which Channel.Close and Connection.Close leave. An end that came
// from elsewhere wraps ErrClosed together with its cause, or is another
// error, and is not matched.
func EndedByApplication(err error) bool {
	return err == ErrClosed || errors.Is(err, ErrConsumerCancelled)
}

// Errors from acknowledging a delivery. They are local: nothing is sent, and
// the channel stays open (the server would close it with 406 PRECONDITION_FAILED).
var (
	// ErrStaleDelivery: the delivery arrived before its channel was reopened
	// after a channel error (or before a reconnect); its tag means nothing
	// now. The server requeued it when the channel closed.
	ErrStaleDelivery = errors.New("amqp: delivery is from before its channel was reopened; its tag is no longer valid")
	// ErrNoAckDelivery: the delivery came to a no-ack consumer (or a Get
	// with NoAck); the server already considers it acknowledged.
	ErrNoAckDelivery = errors.New("amqp: delivery was consumed in no-ack mode and needs no acknowledgement")
	// ErrAlreadySettled: the delivery was already acked, nacked or rejected,
	// possibly by a multiple acknowledgement of a later delivery.
	ErrAlreadySettled = errors.New("amqp: delivery was already acknowledged")
	// ErrReleased: the delivery was handed back with [Delivery.Release]; it
	// can no longer be acknowledged (a multiple acknowledgement of a later
	// delivery still settles it).
	ErrReleased = errors.New("amqp: delivery was released for reuse and can no longer be acknowledged")
)

// ErrReject, wrapped in a handler's error (fmt.Errorf("bad input: %w",
// amqp.ErrReject)), rejects the delivery without requeueing it, under the
// default [ServeOptions].Requeue: the broker dead-letters it if the queue
// has a dead-letter exchange, and drops it otherwise. Use it for messages
// that no retry can fix, so that they do not come back for ever.
var ErrReject = errors.New("amqp: handler rejected the delivery")

// ErrServeNoAck reports a [Channel.Serve] with BasicConsume.NoAck set: the
// handler's outcome decides each delivery's acknowledgement.
var ErrServeNoAck = errors.New("amqp: Serve needs acknowledgements: BasicConsume.NoAck must be false")

// PanicError is the error of a handler that panicked: Serve recovers the
// panic, reports it to OnError and settles the delivery as for any error.
type PanicError struct {
	Value any    // what the handler panicked with
	Stack []byte // the handler goroutine's stack at the panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("amqp: handler panicked: %v", e.Value) }

// Unwrap returns the panic value if it is an error, so that errors.Is and
// errors.As see through a panic(err).
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Recovery.

var (
	// ErrRecovering reports a call made while the connection was being
	// recovered, with RecoveryConfig.FailFast set. It is recoverable: the
	// same call may succeed once the recovery is done.
	ErrRecovering = temporary("amqp: connection is recovering")

	// ErrPublishLost resolves the Confirmation of a publish that was
	// awaiting its confirmation when the connection was lost (without
	// RecoveryConfig.Republish). The message may or may not have reached
	// its queues.
	ErrPublishLost = temporary("amqp: publish lost in reconnect: the connection dropped before the server confirmed it")
)

// peerProtocolError marks the error with which this client closed a link
// because the server sent something it could not parse or accept (see
// linkReader.protocolFailure): a new connection may well not meet it again.
type peerProtocolError struct{ err error }

func (e *peerProtocolError) Error() string { return e.err.Error() }

func (e *peerProtocolError) Unwrap() error { return e.err }

func (e *peerProtocolError) Recoverable() bool { return true }

// kind names the error for telling repeats apart: the reply code sent, or
// the decoding error's sentinel, so that details such as an offset in the
// message do not make the same fault look new.
func (e *peerProtocolError) kind() string {
	var ae *Error
	if errors.As(e.err, &ae) {
		return ae.Code.String()
	}
	for _, s := range []error{ErrMalformedFrame, ErrUnknownMethod, ErrFrameTooLarge, ErrBodyTooLarge} {
		if errors.Is(e.err, s) {
			return s.Error()
		}
	}
	return e.err.Error()
}

// Signals between the engine's parts; never returned to the application.

// errLinkDown reports that the current link has ended, before a recovery
// (or the connection's end) took over: wait for l's detachment and retry.
type errLinkDown struct{ l *link }

func (e errLinkDown) Error() string { return "amqp: connection lost: " + fmt.Sprint(e.l.err) }

func (e errLinkDown) Unwrap() error { return ErrConnectionLost }

// errRetry tells a sender that its request was not sent and the channel is
// recovering: it should wait and send it again.
var errRetry = errors.New("amqp: retry after recovery")

// errRecovering is usableLocked's report that the channel waits for a
// connection recovery.
var errRecovering = errors.New("amqp: channel is recovering")

// errChannelReset reports that the channel was closed while the recovery
// republished on it.
var errChannelReset = errors.New("amqp: channel closed during its recovery")

// errWriterDown marks errors from appendFrames that come from the writer
// (failed or closed) rather than from encode.
var errWriterDown = errors.New("amqp: connection writer stopped")

// Configuration.

// errNoTracerInterface reports a Config.Tracer that implements none of the hooks.
var errNoTracerInterface = errors.New("amqp: Config.Tracer implements none of the tracer interfaces (ConnectTracer, PublishTracer, DeliveryTracer, CallTracer, ChannelErrorTracer, RecoveryTracer, BlockedTracer, ReturnTracer)")

// closedBy is the error for what a link's or the connection's end with
// cause stopped (calls in flight on a lost link, operations once the
// connection has ended): it matches ErrClosed and the cause (such as
// ErrConnectionLost), and Recoverable reports true for it when the cause
// is worth a retry.
func closedBy(cause error) error {
	if cause == nil || cause == ErrClosed {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, cause)
}

// outcome returns the error the Confirmation resolved with.
func (c *Confirmation) outcome() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
