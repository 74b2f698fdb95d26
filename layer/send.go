package layer

import (
	"context"
	"errors"
	"fmt"

	"github.com/amqp-go/amqp"
)

// Send puts a message in a channel, bounded by ctx. It returns once the
// broker has taken responsibility for it (a publisher confirm), or a
// [*ChannelFullError] (matching ErrChannelFull) when the channel already
// holds as many messages as its capacity: the broker refused it, and it was
// not delivered.
//
// The message waits in the channel for a Receive at most Expiry. A channel
// that does not exist yet is created by its first Send.
//
// If ctx ends while Send waits for the broker's answer, the message may or
// may not have been delivered.
//
// In AsgiRabbitMQ mode the capacity check is asgi_rabbitmq's (the queue's
// message count before publishing), exact among this layer's Sends; a
// process-specific "a!b" goes to queue "a!" with header asgi_channel "b".
// In ChannelsRabbitMQ mode the channel must be a process-specific one of
// some layer ("channels_xxx!yyy"; others fail with ErrUnsupported), and
// ErrChannelFull means that layer's queue is full.
func (l *Layer) Send(ctx context.Context, channel string, msg Message) error {
	if l.wire != nil {
		if err := l.wire.checkChannel(channel, useSend); err != nil {
			return err
		}
		return l.wire.send(ctx, channel, msg)
	}
	if err := checkChannel(channel); err != nil {
		return err
	}
	body, err := l.cfg.codec.encode(msg)
	if err != nil {
		return err
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return err
	}
	defer s.put(ch, true)
	q := l.queueName(channel)
	for declared := false; ; declared = true {
		// Mandatory: a channel whose queue does not exist yet (or expired
		// unused) comes back as unroutable rather than vanishing; it is
		// then declared and the message sent again. Queues are not
		// declared before every Send: that would cost a round trip each.
		err = publish(ctx, ch, amqp.Publishing{RoutingKey: q, Mandatory: true, Body: body})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, amqp.ErrNacked):
			// The queue is at x-max-length and has x-overflow
			// reject-publish: the broker refused the message.
			return &ChannelFullError{Channel: channel, Capacity: l.cfg.capacity(channel)}
		case errors.Is(err, amqp.ErrNoRoute) && !declared:
			if err := l.declareChannel(ctx, s, ch, channel); err != nil {
				return err
			}
		default:
			return fmt.Errorf("layer: sending to channel %q: %w", channel, err)
		}
	}
}

// SendGroup sends a message to every channel in a group, bounded by ctx.
// It returns once the broker has taken the message; a group without members
// (or that never existed) takes it and drops it. Delivery to each member is
// best-effort, as ASGI specifies: a member channel that is full misses the
// message, and SendGroup never returns ErrChannelFull.
//
// The members' copies reach their channels a moment after SendGroup returns
// (the broker forwards them from the membership queues): a Receive waits
// for them, whereas a TryReceive right after SendGroup may come too early.
//
// In both Python-compatible modes it reaches the group's members in every
// process, Go or Python, as the Python layer's group_send does.
func (l *Layer) SendGroup(ctx context.Context, group string, msg Message) error {
	if l.wire != nil {
		if err := checkPyGroup(group); err != nil {
			return err
		}
		return l.wire.sendGroup(ctx, group, msg)
	}
	if err := checkGroup(group); err != nil {
		return err
	}
	body, err := l.cfg.codec.encode(msg)
	if err != nil {
		return err
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return err
	}
	defer s.put(ch, true)
	err = publish(ctx, ch, amqp.Publishing{Exchange: l.groupExchange(group), Body: body})
	if errors.Is(err, amqp.ErrNotFound) {
		// The group's exchange does not exist: the group has no members.
		// (The 404 closed the channel; the client reopened it.)
		return nil
	}
	if err != nil {
		return fmt.Errorf("layer: sending to group %q: %w", group, err)
	}
	return nil
}

// publish publishes and waits for the broker's confirm.
func publish(ctx context.Context, ch *amqp.Channel, p amqp.Publishing) error {
	conf, err := ch.Publish(ctx, p)
	if err != nil {
		return err
	}
	return conf.Wait(ctx)
}
