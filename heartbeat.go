package amqp

import (
	"context"
	"time"
)

// heartbeatLoop keeps the connection's liveness in both directions: it sends
// a heartbeat frame when nothing was written for half the negotiated interval
// (so the server always hears from us in time), and it ends the connection
// with ErrHeartbeatTimeout when nothing was read for two intervals.
func (l *link) heartbeatLoop() {
	interval := l.heartbeat
	sendAfter, deadAfter := interval/2, 2*interval
	timer := time.NewTimer(sendAfter)
	defer timer.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-timer.C:
		}
		now := time.Now()
		lastWrite := time.Unix(0, l.w.lastWrite.Load())
		if now.Sub(lastWrite) >= sendAfter {
			_ = l.w.appendFrames(appendHeartbeat)
			lastWrite = now // the writer stamps the real time once it is written
		}
		lastRead := time.Unix(0, l.lastRead.Load())
		if !l.paused.Load() && now.Sub(lastRead) >= deadAfter {
			l.shutdown(ErrHeartbeatTimeout)
			return
		}
		if l.paused.Load() {
			lastRead = now // our own backpressure: count silence from when it ends
		}
		next := min(lastWrite.Add(sendAfter).Sub(now), lastRead.Add(deadAfter).Sub(now))
		timer.Reset(max(next, time.Millisecond))
	}
}

func appendHeartbeat(b []byte) ([]byte, error) { return AppendHeartbeatFrame(b), nil }

// SendHeartbeat queues a heartbeat frame now, for applications that run
// their own liveness scheme on top of (or instead of) the negotiated one.
// ctx bounds waiting for room in the write queue.
func (c *Connection) SendHeartbeat(ctx context.Context) error {
	if err := c.waitUp(ctx); err != nil {
		return err
	}
	l := c.cur.Load()
	if err := l.w.waitRoom(ctx); err != nil {
		return err
	}
	if err := l.w.appendFrames(appendHeartbeat); err != nil {
		if err := l.waitDetached(ctx); err != nil {
			return err
		}
		if c.isDone() {
			return c.closedErr()
		}
		return closedBy(l.err)
	}
	return nil
}

func nowNano() int64 { return time.Now().UnixNano() }
