package amqp

import (
	"errors"
	"fmt"
)

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
	switch {
	case errors.Is(err, ErrHeartbeatTimeout), errors.Is(err, ErrConnectionLost),
		errors.Is(err, ErrRecovering), errors.Is(err, ErrPublishLost):
		return true
	}
	return false
}

// Recoverable reports whether an error with this code may go away on retry.
func (c ReplyCode) Recoverable() bool {
	switch c {
	case CodeContentTooLarge, CodeNoConsumers, CodeResourceLocked, // channel
		CodeConnectionForced, CodeResourceError: // connection
		return true
	}
	return false
}

// Client-side errors. They never borrow a server reply code.
var (
	// ErrClosed is returned by operations on a connection, channel or
	// consumer that is closed. It is wrapped together with the cause of the
	// close where there is one; after the application's own Channel.Close
	// or Connection.Close it is ErrClosed itself (see [EndedByApplication]).
	ErrClosed = errors.New("amqp: closed")

	// ErrConnectionLost reports an I/O failure on the connection's socket.
	ErrConnectionLost = errors.New("amqp: connection lost")

	// ErrHeartbeatTimeout reports that nothing was read from the server for
	// two heartbeat intervals, so the peer is considered dead.
	ErrHeartbeatTimeout = errors.New("amqp: heartbeat timeout: nothing received for two heartbeat intervals")

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
