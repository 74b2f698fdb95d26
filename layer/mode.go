package layer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/amqp-go/amqp"
)

// WireMode selects how a layer maps channels and groups onto the broker:
// its own mapping, or that of one of Django Channels' RabbitMQ layers, so
// that a Go program joins a Python deployment as one more process.
type WireMode int

const (
	// Native is the layer's own mapping (the default): everything under
	// Config.Namespace, capacity, expiry and group expiry enforced by the
	// broker. It does not talk to Python layers.
	Native WireMode = iota

	// AsgiRabbitMQ is asgi_rabbitmq 0.5.5's mapping (Channels 1 / ASGI 1):
	// a queue named after each channel, a fanout exchange per group, the
	// shared "dead-letters" queue for process-specific group members and
	// group expiry, Fernet encryption. A layer in this mode reads and
	// writes the same queues and exchanges, with the same arguments,
	// properties and bodies, as asgi_rabbitmq does.
	AsgiRabbitMQ

	// ChannelsRabbitMQ is channels_rabbitmq's mapping (CJWorkbench, Channels
	// 3–4): one exclusive queue per layer, "channels_" + 12 letters, whose
	// channels are "<queue>!" + 12 letters, and one direct exchange,
	// "groups", routing group messages by group name. Only process-specific
	// ("!") channels; no group expiry, no encryption.
	ChannelsRabbitMQ
)

func (m WireMode) String() string {
	switch m {
	case Native:
		return "native"
	case AsgiRabbitMQ:
		return "asgi_rabbitmq"
	case ChannelsRabbitMQ:
		return "channels_rabbitmq"
	}
	return fmt.Sprintf("WireMode(%d)", int(m))
}

// wire is a Python-compatible mapping. The native mapping is the Layer's
// own methods; a Layer in another mode hands every call to its wire after
// checking the names against that mode's rules.
type wire interface {
	// setUp prepares a new connection: declarations every process of the
	// mode makes on connecting, and its background consumer, which must
	// end when conn does (started through l.goBackground).
	setUp(ctx context.Context, conn *amqp.Connection) error

	send(ctx context.Context, channel string, msg Message) error
	sendGroup(ctx context.Context, group string, msg Message) error
	receive(ctx context.Context, channels []string) (string, Message, error)
	tryReceive(ctx context.Context, channels []string) (string, Message, bool, error)
	newChannel(ctx context.Context, prefix string) (string, error)
	groupAdd(ctx context.Context, group, channel string) error
	groupDiscard(ctx context.Context, group, channel string) error

	checkChannel(name string, use nameUse) error
}

// nameUse says what a channel name is used for: the rules differ.
type nameUse int

const (
	useSend nameUse = iota
	useReceive
	useGroup
)

// checkWireChannels checks the channels of a receive by the mode's rules
// and removes duplicates.
func (l *Layer) checkWireChannels(channels []string) ([]string, error) {
	if len(channels) == 0 {
		return nil, errors.New("layer: no channel given")
	}
	out := make([]string, 0, len(channels))
	for _, c := range channels {
		if err := l.wire.checkChannel(c, useReceive); err != nil {
			return nil, err
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (l *Layer) checkWireMember(group, channel string) error {
	if err := checkPyGroup(group); err != nil {
		return err
	}
	return l.wire.checkChannel(channel, useGroup)
}
