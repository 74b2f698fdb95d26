package amqp

import (
	"context"
	"sync"
	"time"
)

// heartbeat keeps a link's liveness in both directions: it sends a
// heartbeat frame when nothing was written for half the negotiated interval
// (so the server always hears from us in time), and it ends the link with
// ErrHeartbeatTimeout when nothing was read for two intervals. It is a
// timer whose function runs at each check, not a goroutine of its own, so an
// idle connection has two goroutines (the reader and the writer).
type heartbeat struct {
	mu      sync.Mutex // guards timer and stopped
	timer   *time.Timer
	stopped bool
	// ticks counts the timer's armed or running function, so that
	// stopHeartbeat can wait for one that fired already: Timer.Stop does not.
	ticks sync.WaitGroup
}

// startHeartbeat arms the first check, once the handshake is done.
func (l *link) startHeartbeat() {
	l.hb.mu.Lock()
	defer l.hb.mu.Unlock()
	if !l.hb.stopped {
		l.hb.ticks.Add(1)
		l.hb.timer = time.AfterFunc(l.heartbeat/2, l.heartbeatTick)
	}
}

// stopHeartbeat disarms the timer; when it returns, no check runs and none
// will (the link's closer calls it, so Close finds nothing left running).
func (l *link) stopHeartbeat() {
	l.hb.mu.Lock()
	l.hb.stopped = true
	if l.hb.timer != nil && l.hb.timer.Stop() {
		l.hb.ticks.Done() // disarmed before it fired: it never runs
	}
	l.hb.mu.Unlock()
	l.hb.ticks.Wait() // one that fired finds stopped set, or is ending the link
}

func (l *link) heartbeatTick() {
	defer l.hb.ticks.Done()
	if l.heartbeatCheck() {
		l.shutdown(ErrHeartbeatTimeout) // outside hb.mu: shutdown takes the connection's locks
	}
}

// heartbeatCheck sends a heartbeat if one is due and arms the next check,
// or reports that the peer is dead.
func (l *link) heartbeatCheck() (dead bool) {
	l.hb.mu.Lock()
	defer l.hb.mu.Unlock()
	if l.hb.stopped || l.ended() {
		return false
	}
	sendAfter, deadAfter := l.heartbeat/2, 2*l.heartbeat
	now := time.Now()
	lastWrite := time.Unix(0, l.w.lastWrite.Load())
	if now.Sub(lastWrite) >= sendAfter {
		_ = l.w.appendFrames(appendHeartbeat)
		lastWrite = now // the writer stamps the real time once it is written
	}
	lastRead := time.Unix(0, l.lastRead.Load())
	if !l.paused.Load() && now.Sub(lastRead) >= deadAfter {
		return true
	}
	if l.paused.Load() {
		lastRead = now // our own backpressure: count silence from when it ends
	}
	next := min(lastWrite.Add(sendAfter).Sub(now), lastRead.Add(deadAfter).Sub(now))
	l.hb.ticks.Add(1) // the next run, armed while this one still counts
	l.hb.timer.Reset(max(next, time.Millisecond))
	return false
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
