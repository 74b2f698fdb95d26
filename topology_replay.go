package amqp

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// exclusiveRetryFor bounds how long a recovery retries declaring an
// exclusive queue that the broker still holds for the lost connection (405
// RESOURCE_LOCKED): the broker releases it once it notices that connection
// is gone, which after a network failure takes up to its heartbeat timeout.
const exclusiveRetryFor = 30 * time.Second

// restoreTopology declares the recorded exchanges, queues and bindings
// again on a channel of its own, so that a failing entity cannot disturb
// the application's channels. Failures are reported to OnRecovery
// listeners; only the end of l or ctx stops it.
func (c *Connection) restoreTopology(ctx context.Context, l *link) error {
	exchanges, queues, bindings := c.rec.topo.snapshot()
	if len(exchanges)+len(queues)+len(bindings) == 0 {
		return nil
	}
	tmp, err := c.openChannel(ctx, libraryChannel)
	if errors.Is(err, ErrNoFreeChannel) {
		var giveBack func()
		tmp, giveBack, err = c.openBorrowedChannel(ctx, l)
		if giveBack != nil {
			defer giveBack()
		}
	}
	if err != nil {
		if lerr := linkErr(ctx, l); lerr != nil {
			return lerr
		}
		c.emit(RecoveryEvent{Kind: RecoveryEntityFailed, Entity: "topology", Err: err})
		return nil
	}
	// ctx ends with l, so a close-ok that never comes cannot hold the recovery.
	defer tmp.Close(ctx)

	failed := func(entity string, err error) error {
		if lerr := linkErr(ctx, l); lerr != nil {
			return lerr
		}
		c.emit(RecoveryEvent{Kind: RecoveryEntityFailed, Entity: entity, Err: err})
		return nil
	}
	for _, e := range exchanges {
		args := e.args
		if _, err := tmp.call(ctx, &args, callOpts{}); err != nil {
			if err := failed(fmt.Sprintf("exchange %q", args.Exchange), err); err != nil {
				return err
			}
		}
	}
	for _, q := range queues {
		args := q.args
		oldName := args.Queue
		if q.serverNamed {
			args.Queue = ""
		}
		r, err := c.declareForRecovery(ctx, tmp, &args)
		if err != nil {
			if err := failed(fmt.Sprintf("queue %q", oldName), err); err != nil {
				return err
			}
			continue
		}
		if newName := r.m.(*QueueDeclareOk).Queue; newName != oldName {
			c.rec.topo.rename(oldName, newName)
			c.renameConsumersQueue(oldName, newName)
			c.emit(RecoveryEvent{Kind: RecoveryQueueRenamed, OldName: oldName, NewName: newName})
		}
	}
	_, _, bindings = c.rec.topo.snapshot() // with renamed queues
	for _, b := range bindings {
		var req Method
		var entity string
		if b.queue != nil {
			req, entity = b.queue, fmt.Sprintf("binding of queue %q to exchange %q (key %q)", b.queue.Queue, b.queue.Exchange, b.queue.RoutingKey)
		} else {
			req, entity = b.exchange, fmt.Sprintf("binding of exchange %q to exchange %q (key %q)", b.exchange.Destination, b.exchange.Source, b.exchange.RoutingKey)
		}
		if _, err := tmp.call(ctx, req, callOpts{}); err != nil {
			if err := failed(entity, err); err != nil {
				return err
			}
		}
	}
	return nil
}

// openBorrowedChannel opens the recovery's own channel on the number of an
// application channel that waits to be reattached, for when every number is
// taken: on the new link no number is open yet. giveBack returns the number
// to its channel once the borrowed one is closed.
func (c *Connection) openBorrowedChannel(ctx context.Context, l *link) (tmp *Channel, giveBack func(), err error) {
	c.chMu.Lock()
	var owner *Channel
	slots := c.channels.all()
	for i := range slots {
		if ch := slots[i].Load(); ch != nil && ch.link.Load() == nil {
			owner = ch
			break
		}
	}
	if owner == nil {
		c.chMu.Unlock()
		return nil, nil, ErrNoFreeChannel
	}
	tmp = newChannel(c, owner.id)
	tmp.link.Store(l)
	tmp.owner = libraryChannel
	c.channels.set(owner.id, tmp)
	c.chMu.Unlock()
	giveBack = func() {
		c.chMu.Lock()
		ending := c.ending
		if cur := c.channels.get(owner.id); !ending && (cur == nil || cur == tmp) {
			c.channels.set(owner.id, owner)
		}
		c.chMu.Unlock()
		if ending { // finalize ran while the number was lent and could not see the owner
			owner.finish(c.closedErr())
		}
	}
	_, err = tmp.call(ctx, &ChannelOpen{}, callOpts{})
	if err != nil {
		tmp.finish(fmt.Errorf("%w: %w", ErrClosed, err))
		return nil, giveBack, err
	}
	tmp.mu.Lock()
	tmp.opened = true
	tmp.mu.Unlock()
	return tmp, giveBack, nil
}

// declareForRecovery declares a queue, retrying while the broker still
// holds an exclusive queue of the same name for the lost connection.
func (c *Connection) declareForRecovery(ctx context.Context, tmp *Channel, args *QueueDeclare) (callResult, error) {
	deadline := time.Now().Add(exclusiveRetryFor)
	for {
		r, err := tmp.call(ctx, args, callOpts{})
		if err == nil || !args.Exclusive || !errors.Is(err, ErrResourceLocked) || time.Now().After(deadline) {
			return r, err
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return r, err
		}
	}
}

// renameConsumersQueue points consumers of a renamed queue to its new name,
// so that they subscribe to it when their channels are restored.
func (c *Connection) renameConsumersQueue(oldName, newName string) {
	for _, ch := range c.channelList() {
		ch.mu.Lock()
		for _, cons := range ch.consumers {
			cons.mu.Lock()
			if cons.args.Queue == oldName {
				cons.args.Queue = newName
			}
			cons.mu.Unlock()
		}
		ch.mu.Unlock()
	}
}
