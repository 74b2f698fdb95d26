package amqp

import (
	"context"
	"fmt"
)

// WaitConfirms is a publish barrier: it waits until every publish made on
// the channel before the call has its outcome, bounded by ctx, so that
// nothing published is left unknown at a commit point or a shutdown. The
// channel must be in confirm mode (else ErrNoConfirmMode).
//
// It returns nil when none of them failed. Otherwise it returns a
// [*ConfirmsError] that lists every failed publish (nacked, returned
// unroutable, or lost with its channel or connection) not reported by an
// earlier WaitConfirms, including any that failed before the call, and
// matches each one's error. A channel reports each failure once, to the
// first WaitConfirms that returns after the failure is known, so a failure
// of a publish made while a WaitConfirms waits may be reported by that one;
// goroutines that share a channel and need the outcomes of their own
// publishes should wait on their own Confirmations. When ctx ends first,
// WaitConfirms returns an error wrapping ctx's and reports nothing, so the
// next call still reports every failure.
//
// Publishes that Publish itself refused (it returned an error) are not
// counted: they were never sent. With RecoveryConfig.Republish, a publish
// kept across a reconnect is waited for until the new connection's server
// confirms it.
func (ch *Channel) WaitConfirms(ctx context.Context) error {
	ch.mu.Lock()
	if !ch.confirmMode {
		ch.mu.Unlock()
		return fmt.Errorf("amqp: WaitConfirms on channel %d: %w", ch.id, ErrNoConfirmMode)
	}
	outstanding := make([]*Confirmation, 0, ch.confirms.unconfirmed()+len(ch.republish))
	outstanding = append(outstanding, ch.republish...) // sent before those in the tracker: kept across a loss
	for _, c := range ch.confirms.pending {
		if c != nil {
			outstanding = append(outstanding, c)
		}
	}
	ch.mu.Unlock()

	for _, c := range outstanding {
		if err := c.Wait(ctx); err != nil && ctx.Err() != nil {
			if _, fin, _ := c.progress(); !fin {
				return fmt.Errorf("amqp: WaitConfirms on channel %d: %w", ch.id, ctx.Err())
			}
		}
	}

	ch.mu.Lock()
	failed, omitted := ch.confirmFailures.take()
	ch.mu.Unlock()
	if len(failed) == 0 && omitted == 0 {
		return nil
	}
	return &ConfirmsError{Failed: failed, Omitted: omitted}
}
