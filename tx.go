package amqp

import (
	"context"
	"errors"
)

// TxSelect puts the channel in transaction mode (tx.select): publishes and
// acknowledgements take effect only on TxCommit. A channel error ends the
// transaction: the reopened channel is not in transaction mode, and the
// failing call's error tells the application so.
func (ch *Channel) TxSelect(ctx context.Context) error {
	_, err := ch.call(ctx, &TxSelect{}, callOpts{})
	return err
}

// TxCommit commits the current transaction (tx.commit).
func (ch *Channel) TxCommit(ctx context.Context) error {
	_, err := ch.call(ctx, &TxCommit{}, callOpts{}) // fails first after a lost transaction: checkSendLocked
	if err == ErrTransactionLost {
		// Work done since the recovery belongs to the broken transaction:
		// discard it too, so that the next transaction starts empty.
		if rerr := ch.TxRollback(ctx); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

// TxRollback abandons the current transaction (tx.rollback).
func (ch *Channel) TxRollback(ctx context.Context) error {
	_, err := ch.call(ctx, &TxRollback{}, callOpts{}) // discards lost work too: checkSendLocked
	return err
}

// checkTxLostLocked fails the first commit after a recovery
// discarded the transaction's work, and clears the mark. ch.mu must be held.
func (ch *Channel) checkTxLostLocked() error {
	if ch.txLost {
		ch.txLost = false
		return ErrTransactionLost
	}
	return nil
}
