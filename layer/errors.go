package layer

import (
	"errors"
	"fmt"
)

var (
	// ErrChannelFull matches a [*ChannelFullError]: Send found the channel
	// holding as many messages as its capacity allows. It is the layer's
	// backpressure (asgi's ChannelFull): wait, then try again, or drop the
	// message.
	ErrChannelFull = errors.New("layer: channel full")

	// ErrInvalidName matches a [*NameError]: a channel, group or prefix
	// name that the layer does not accept.
	ErrInvalidName = errors.New("layer: invalid name")

	// ErrDecrypt matches a [*MessageError] for a message that none of the
	// layer's keys decrypts: it was encrypted with other keys, not
	// encrypted at all while the layer has keys, tampered with, or older
	// than the layer's Expiry plus ten seconds (Fernet's time-to-live).
	ErrDecrypt = errors.New("layer: message cannot be decrypted with this layer's keys")

	// ErrDecode matches a [*MessageError] for a message whose body is not
	// a msgpack map with string keys, such as an encrypted message read by
	// a layer without keys.
	ErrDecode = errors.New("layer: message is not a msgpack map")

	// ErrClosed is returned by every method of a Layer after Close.
	ErrClosed = errors.New("layer: closed")
)

// ChannelFullError reports a message that Send did not deliver because the
// channel was full: the broker refused it (a publisher nack from a queue at
// its x-max-length with x-overflow reject-publish). It matches
// ErrChannelFull.
type ChannelFullError struct {
	Channel  string // the channel name
	Capacity int    // the channel's capacity in this layer's configuration; 0 when the receiving layer's is not known (ChannelsRabbitMQ)
}

func (e *ChannelFullError) Error() string {
	if e.Capacity == 0 {
		return fmt.Sprintf("layer: channel %q is full (its layer's queue refused the message)", e.Channel)
	}
	return fmt.Sprintf("layer: channel %q is full (capacity %d)", e.Channel, e.Capacity)
}

// Is matches ErrChannelFull.
func (e *ChannelFullError) Is(target error) bool { return target == ErrChannelFull }

// NameError reports a name the layer refuses. It matches ErrInvalidName.
type NameError struct {
	Kind   string // "channel", "group", "prefix" or "namespace"
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("layer: invalid %s name %q: %s", e.Kind, e.Name, e.Reason)
}

// Is matches ErrInvalidName.
func (e *NameError) Is(target error) bool { return target == ErrInvalidName }

// MessageError reports a message that was taken from a channel but could
// not be read. The message is consumed: reading it again would fail again,
// so it is acknowledged and dropped rather than requeued. It unwraps to
// ErrDecrypt or ErrDecode and the underlying cause.
type MessageError struct {
	Channel string // the channel the message was taken from
	Err     error  // matches ErrDecrypt or ErrDecode
}

func (e *MessageError) Error() string {
	return fmt.Sprintf("layer: message on channel %q dropped: %v", e.Channel, e.Err)
}

func (e *MessageError) Unwrap() error { return e.Err }

// ErrUnsupported matches an [*UnsupportedError]: the layer's wire mode has
// no such feature, because the Python layer it is compatible with has none.
var ErrUnsupported = errors.New("layer: not supported in this wire mode")

// UnsupportedError reports a configuration option or a call that the
// layer's wire mode lacks (see [WireMode]). It matches ErrUnsupported.
type UnsupportedError struct {
	Mode    WireMode
	Feature string // what was asked for, such as "Flush" or "Config.GroupExpiry"
	Reason  string // why the mode has no such thing
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("layer: %s in %s mode: %s", e.Feature, e.Mode, e.Reason)
}

// Is matches ErrUnsupported.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }
