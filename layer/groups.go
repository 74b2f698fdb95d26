package layer

import (
	"context"
	"errors"
	"fmt"

	"github.com/amqp-go/amqp"
)

// GroupAdd adds a channel to a group, or renews its membership: the channel
// stays in the group until GroupExpiry after the last GroupAdd for it, or
// until GroupDiscard. It also creates the channel if it does not exist.
//
// On the broker, the group is a fanout exchange and the membership a queue
// bound to it, which forwards every message at once to the channel's queue
// (x-message-ttl 0, dead-lettered to the default exchange with the channel's
// queue as routing key) and which the broker deletes, with its binding, once
// GroupExpiry has passed without a GroupAdd redeclaring it (x-expires). The
// broker keeps the time, so every layer on the cluster sees a membership
// lapse at the same moment, and none needs to be running for it to happen.
func (l *Layer) GroupAdd(ctx context.Context, group, channel string) error {
	if err := checkGroup(group); err != nil {
		return err
	}
	if err := checkChannel(channel); err != nil {
		return err
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return err
	}
	defer s.put(ch, true)
	// The group's exchange auto-deletes when its last membership goes, so
	// it can vanish between the declaration and the binding (another
	// layer discarded the last member): then start over.
	for attempt := 1; ; attempt++ {
		err := l.groupAdd(ctx, s, ch, group, channel)
		if err == nil || !errors.Is(err, amqp.ErrNotFound) || attempt == 3 {
			return err
		}
	}
}

func (l *Layer) groupAdd(ctx context.Context, s *session, ch *amqp.Channel, group, channel string) error {
	ex := l.groupExchange(group)
	if err := ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: ex, Type: "fanout", AutoDelete: true}); err != nil {
		return fmt.Errorf("layer: declaring the exchange of group %q: %w", group, err)
	}
	if err := l.declareChannel(ctx, s, ch, channel); err != nil {
		return err
	}
	mq := l.memberQueue(group, channel)
	_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: mq, Arguments: amqp.Table{
		"x-expires":                 l.cfg.groupExpiry,
		"x-message-ttl":             int64(0),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": l.queueName(channel),
	}})
	if err != nil {
		return fmt.Errorf("layer: declaring the membership of channel %q in group %q: %w", channel, group, err)
	}
	if err := ch.QueueBind(ctx, amqp.QueueBind{Queue: mq, Exchange: ex}); err != nil {
		return fmt.Errorf("layer: binding the membership of channel %q in group %q: %w", channel, group, err)
	}
	return nil
}

// GroupDiscard removes a channel from a group. Removing a channel that is
// not a member does nothing.
func (l *Layer) GroupDiscard(ctx context.Context, group, channel string) error {
	if err := checkGroup(group); err != nil {
		return err
	}
	if err := checkChannel(channel); err != nil {
		return err
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return err
	}
	defer s.put(ch, true)
	_, err = ch.QueueDelete(ctx, amqp.QueueDelete{Queue: l.memberQueue(group, channel)})
	if err != nil && !errors.Is(err, amqp.ErrNotFound) {
		return fmt.Errorf("layer: discarding channel %q from group %q: %w", channel, group, err)
	}
	return nil
}

// NewChannel creates a channel with a unique name, prefix + "!" + 26 random
// characters, for one reader: typically the caller, who hands the name to
// those that send to it. prefix may end in "!" already. The channel lasts
// while it is used; unused (no Receive) for twice the Expiry, it goes away
// with its messages, which have all expired by then.
func (l *Layer) NewChannel(ctx context.Context, prefix string) (string, error) {
	name, err := newChannelName(prefix)
	if err != nil {
		return "", err
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return "", err
	}
	defer s.put(ch, true)
	if err := l.declareChannel(ctx, s, ch, name); err != nil {
		return "", err
	}
	return name, nil
}
