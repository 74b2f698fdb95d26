package amqp

// noteReplyLocked records state that the successful reply to req
// establishes, for re-application after a reopen. ch.mu must be held.
func (ch *Channel) noteReplyLocked(req Method) {
	switch req := req.(type) {
	case *BasicQos:
		// Recorded on success only: re-applying a qos the server refused
		// would fail the reopen the same way.
		q := *req
		if q.Global {
			ch.globalPrefetch = &q
		} else {
			ch.prefetch = &q
		}
	case *BasicRecover:
		// The server requeued every unacknowledged delivery: their tags are
		// void, and the redeliveries that follow get new ones.
		ch.newEpochLocked()
		ch.settle.reset()
		ch.txSettled = nil
	case *TxRollback:
		// The acknowledgements of the transaction were discarded: those
		// deliveries are unacknowledged again and may be settled anew.
		if ch.rollbacks.len() > 0 {
			for _, tag := range ch.rollbacks.pop() {
				ch.settle.unsettle(tag)
			}
		}
	}
}

// checkSendLocked fails a request that must not be sent now, under ch.mu
// right before call queues it (so the check and the request are atomic with
// respect to a recovery): the first commit after a recovery discarded the
// transaction's work fails (checkTxLostLocked) and sends nothing; a
// rollback clears that mark.
func (ch *Channel) checkSendLocked(m Method) error {
	switch m.(type) {
	case *TxCommit:
		return ch.checkTxLostLocked()
	case *TxRollback:
		// Asked before the request is queued, so a rollback that never goes
		// out (its ctx ended while the link was lost) still clears it.
		ch.txLost = false // the lost work is discarded either way, as asked
	}
	return nil
}

// noteSentLocked records mode changes as their request is queued: the server
// applies confirm mode to every publish sent after confirm.select, before its
// select-ok arrives (and with no-wait none arrives).
func (ch *Channel) noteSentLocked(m Method) {
	switch m := m.(type) {
	case *ConfirmSelect:
		ch.enterConfirmModeLocked()
	case *TxSelect:
		ch.txMode = true
	case *TxCommit:
		ch.txSettled = nil // acks after this belong to the next transaction
		ch.txWork = false
	case *TxRollback:
		// Snapshot now: acks sent after the rollback are not rolled back.
		ch.rollbacks.push(ch.txSettled)
		ch.txSettled = nil
		ch.txWork = false
	case *BasicRecoverAsync:
		// No reply marks the point, so the tags handed out so far are void
		// from the moment it is sent. (A delivery the server sent before it
		// saw the request but that is read afterwards is misfiled as current;
		// its ack then still gets the server's 406.)
		if m.Requeue {
			ch.newEpochLocked()
			ch.settle.reset()
			ch.txSettled = nil
		}
	}
}
