package amqp

import "context"

// TxSelect puts the channel in transaction mode (tx.select): publishes and
// acknowledgements take effect only on TxCommit. A channel error ends the
// transaction: the reopened channel is not in transaction mode, and the
// failing call's error tells the application so.
func (ch *Channel) TxSelect(ctx context.Context) error {
	_, err := ch.call(ctx, &TxSelect{})
	return err
}

// TxCommit commits the current transaction (tx.commit).
func (ch *Channel) TxCommit(ctx context.Context) error {
	_, err := ch.call(ctx, &TxCommit{})
	return err
}

// TxRollback abandons the current transaction (tx.rollback).
func (ch *Channel) TxRollback(ctx context.Context) error {
	_, err := ch.call(ctx, &TxRollback{})
	return err
}
