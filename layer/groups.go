package layer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/amqp-go/amqp"
)

// GroupAdd adds a channel to a group, or renews its membership: the channel
// stays in the group until GroupExpiry after the last GroupAdd for it, or
// until GroupDiscard. It also creates the channel if it does not exist.
//
// On the broker, the group is a fanout exchange and the membership a fanout
// exchange of its own bound to the group's (an exchange-to-exchange
// binding), with a queue bound to it that forwards every message at once to
// the channel's queue (x-message-ttl 0, dead-lettered to the default
// exchange with the channel's queue as routing key). The broker deletes that
// queue once GroupExpiry has passed without a GroupAdd redeclaring it
// (x-expires); with it goes its binding, the membership's exchange, which
// auto-deletes when its last binding goes, and with the exchange its binding
// to the group. The broker keeps the time, so every layer on the cluster
// sees a membership lapse at the same moment, and none needs to be running
// for it to happen.
//
// In AsgiRabbitMQ mode the mapping and the expiry are asgi_rabbitmq's (see
// the README): a group message reaches a process-specific member, and a
// membership lapses, through the shared "dead-letters" queue that this
// layer and every Python process consume. In ChannelsRabbitMQ mode the
// channel must be one of this layer's own, memberships last as long as the
// layer, and there is no GroupExpiry.
func (l *Layer) GroupAdd(ctx context.Context, group, channel string) error {
	if l.wire != nil {
		if err := l.checkWireMember(group, channel); err != nil {
			return err
		}
		return l.wire.groupAdd(ctx, group, channel)
	}
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
	// The group's exchange auto-deletes when its last membership goes, and
	// the membership's exchange when its queue goes (GroupDiscard in
	// another layer, or expiry), so either can vanish between its
	// declaration and a binding to it: then start over.
	for attempt := 1; ; attempt++ {
		err := l.groupAdd(ctx, s, ch, group, channel)
		if err == nil || !errors.Is(err, amqp.ErrNotFound) || attempt == maxGroupAddAttempts {
			return err
		}
	}
}

// maxGroupAddAttempts bounds GroupAdd's attempts when what it declared
// vanishes before it is bound: a group emptied by other layers at that very
// moment, or a GroupDiscard of the same membership racing with it.
const maxGroupAddAttempts = 8

func (l *Layer) groupAdd(ctx context.Context, s *session, ch *amqp.Channel, group, channel string) error {
	gx := l.groupExchange(group)
	name := l.memberName(group, channel) // the membership's exchange and queue
	if err := l.register(ctx, s, ch, "queue "+name, "exchange "+name, "exchange "+gx); err != nil {
		return err
	}
	// Three round trips: the declarations, then the bindings, each binding
	// after what it binds. (Methods sent with no-wait would take one, but a
	// no-wait failure may reach the client only after the next call was
	// made, which then runs on the reopened channel and may succeed: the
	// failure would be lost.)
	err := pipelined(
		// The channel's queue, and the membership's: redeclaring it
		// renews its x-expires lease.
		func() error { return l.declareChannel(ctx, s, ch, channel) },
		func() error {
			_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: name, Arguments: amqp.Table{
				"x-expires":                 l.cfg.groupExpiry,
				"x-message-ttl":             int64(0),
				"x-dead-letter-exchange":    "",
				"x-dead-letter-routing-key": l.queueName(channel),
			}})
			return err
		},
		func() error {
			return ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: name, Type: "fanout", AutoDelete: true})
		},
	)
	if err != nil {
		return fmt.Errorf("layer: adding channel %q to group %q: %w", channel, group, err)
	}
	// An auto-delete exchange goes when it loses its last binding, never if
	// it had none: the membership's exchange is bound to its queue even if
	// ctx ends now, so that it goes when the queue does. The group's
	// exchange is (re)declared only now, one round trip before it is bound,
	// which leaves the least time for it to go with its last member
	// (GroupDiscard in another layer, or expiry).
	bctx, cancel := cleanupContext(ctx)
	defer cancel()
	err = pipelined(
		func() error { return ch.QueueBind(bctx, amqp.QueueBind{Queue: name, Exchange: name}) },
		func() error {
			return ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: gx, Type: "fanout", AutoDelete: true})
		},
	)
	if err == nil {
		// Last, the group's exchange to the membership's: the membership
		// is complete before the first message reaches it.
		err = ch.ExchangeBind(ctx, amqp.ExchangeBind{Source: gx, Destination: name})
	}
	if err != nil {
		return fmt.Errorf("layer: adding channel %q to group %q: %w", channel, group, err)
	}
	return nil
}

// GroupDiscard removes a channel from a group, at once. Removing a channel
// that is not a member does nothing.
//
// It unbinds the membership's exchange from the group's, and deletes the
// membership's queue and exchange (the exchange would go on its own with the
// queue's binding). The group's exchange auto-deletes with its last member.
func (l *Layer) GroupDiscard(ctx context.Context, group, channel string) error {
	if l.wire != nil {
		if err := l.checkWireMember(group, channel); err != nil {
			return err
		}
		return l.wire.groupDiscard(ctx, group, channel)
	}
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
	name := l.memberName(group, channel)
	steps := []func() error{
		func() error {
			return ch.ExchangeUnbind(ctx, amqp.ExchangeUnbind{Source: l.groupExchange(group), Destination: name})
		},
		func() error {
			_, err := ch.QueueDelete(ctx, amqp.QueueDelete{Queue: name})
			return err
		},
		func() error { return ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: name}) },
	}
	// RabbitMQ (3.10 at least) answers each of these with ok when what it
	// removes is already gone, in whatever order they come: one round trip.
	err = pipelined(steps...)
	if errors.Is(err, amqp.ErrNotFound) {
		// A broker that answers 404 instead closes the channel, and the
		// calls in flight fail with it: one at a time, then.
		err = nil
		for _, step := range steps {
			if e := step(); e != nil && !errors.Is(e, amqp.ErrNotFound) {
				err = e
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("layer: discarding channel %q from group %q: %w", channel, group, err)
	}
	return nil
}

// pipelined makes the calls on one channel at once, from a goroutine each:
// the client pipelines them, so together they cost one round trip, and the
// broker handles them in the order they reach it, which is not specified.
// It returns the first error in the order of the calls. A channel error
// fails every call in flight with the same error, which names the method
// and the object that caused it.
func pipelined(calls ...func() error) error {
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, call := range calls {
		wg.Go(func() { errs[i] = call() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// NewChannel creates a channel with a unique name, prefix + "!" + 26 random
// characters, for one reader: typically the caller, who hands the name to
// those that send to it. prefix may end in "!" already. The channel lasts
// while it is used; unused (no Receive) for twice the Expiry, it goes away
// with its messages, which have all expired by then.
//
// In AsgiRabbitMQ mode the name is prefix + "?" + 20 random letters, as
// asgi_rabbitmq's new_channel makes them (prefix may end in "?" already).
// In ChannelsRabbitMQ mode it is the layer's queue + "!" + 12 random
// letters, and prefix is ignored, as channels_rabbitmq does.
func (l *Layer) NewChannel(ctx context.Context, prefix string) (string, error) {
	if l.wire != nil {
		return l.wire.newChannel(ctx, prefix)
	}
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
