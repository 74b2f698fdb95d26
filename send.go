package amqp

import (
	"context"
	"errors"
	"fmt"
)

// pendingCall is a synchronous request whose reply has not arrived yet.
// Replies on a channel come in request order, so a channel keeps its pending
// calls in a FIFO and hands each reply to the oldest one. A caller that gives
// up (its ctx ended) leaves its entry in place: the late reply is matched to
// it and dropped, never given to the next call.
type pendingCall struct {
	req Method
	// reply receives the outcome; buffered so the reader never blocks on it.
	// Nil for the library's own calls (such as re-applying qos after a
	// channel was reopened), which have only a hook.
	reply chan callResult
	// hook runs on the reader goroutine before the caller is told, so state
	// the reply establishes (a consumer's registration) is in place before
	// the next frame is read, even if the caller has given up. Must not block.
	hook func(callResult)
}

// callResult is the outcome of a call: the reply method, and the message
// for a reply that carries content (basic.get-ok), or the error that ended it.
type callResult struct {
	m   Method
	msg *Delivery
	err error
	// queued is set by call once it got as far as queueing the request
	// (under ch.mu, right before the append): the server may have it, even
	// if the call then failed.
	queued bool
}

func (p *pendingCall) resolve(r callResult) {
	if p.hook != nil {
		p.hook(r)
	}
	if p.reply != nil {
		p.reply <- r
	}
}

// callQueue is a channel's FIFO of pending calls, in request order.
type callQueue = fifo[*pendingCall]

// callOpts are what a call may add to sending a request and awaiting its
// reply. The zero value is a plain call.
//
// There is no precondition option: checks that must be atomic with queueing
// a request are per method, in checkSendLocked (modes.go). A func value in
// callOpts would escape with hook (escape analysis does not tell a struct's
// fields apart), and the caller's closure would cost an allocation.
type callOpts struct {
	// hook runs on the reader when the reply (or the failure) arrives,
	// whether or not the caller still waits; see pendingCall.hook. For a
	// request without a reply (no-wait) it does not run.
	hook func(callResult)
	// record records the topology the request declares or deletes, for
	// replay by a connection recovery (see recordTopology): on the reader at
	// the reply, or, for a no-wait request, once it is queued. Only
	// exchange, queue and binding methods set it; it takes hook's place.
	record bool
	// restoring marks the connection recovery's own requests on the channel
	// it restores (the reopen recipe, consumers): they go out only while the
	// channel recovers, on the link it is being restored to, where an
	// application's calls wait for the recovery to end. They are not traced.
	restoring bool
}

// call sends the method req on the channel and, if the server will answer
// it (expectsReply), waits for the reply, bounded by ctx. It is the one way
// a request is sent from a caller's goroutine; opts adds a hook on the
// reply, topology recording, or marks a recovery's own request.
// It waits for room in the write queue and while the connection recovers
// (or fails fast, by Config.Recovery). Cancelling ctx before the request is
// queued sends nothing; cancelling it later returns at once, and the reply,
// when it comes, is discarded. A request the dying link refused was never
// sent, so it waits for the recovery and goes out on the new link.
func (ch *Channel) call(ctx context.Context, req Method, opts callOpts) (callResult, error) {
	if opts.record {
		if !ch.recording() {
			opts.record = false
		} else if expectsReply(req) {
			// The hook records at the reply, so a call whose ctx ended
			// after the request went out is still recorded if the server
			// carried it out.
			opts.hook = func(r callResult) {
				if r.err == nil {
					ch.recordTopology(req, r.m)
				}
			}
		}
	}
	if t := ch.conn.tr.call; t != nil && expectsReply(req) && !opts.restoring {
		return ch.callTraced(ctx, t, req, func(ctx context.Context) (callResult, error) {
			return ch.callUntraced(ctx, req, opts)
		})
	}
	return ch.callUntraced(ctx, req, opts)
}

// callUntraced is call's body, inside the CallTracer's brackets; only call
// calls it.
func (ch *Channel) callUntraced(ctx context.Context, req Method, opts callOpts) (callResult, error) {
	if err := ctx.Err(); err != nil {
		return callResult{}, ch.ctxError(req, err)
	}
	wait := expectsReply(req)
	var p *pendingCall
	if wait {
		p = ch.spareCall.Swap(nil)
		if p == nil {
			p = &pendingCall{reply: make(chan callResult, 1)}
		}
		p.req, p.hook = req, opts.hook
	}
	var err error
	queued := false
	if opts.restoring {
		queued = true
		err = ch.appendRestoring(ctx, req, p)
	} else {
		err = ch.withSendLock(ctx, req, nil, func(l *link) error {
			if err := ch.checkSendLocked(req); err != nil {
				return err
			}
			queued = true
			return ch.appendLocked(l, req, p)
		})
	}
	if err != nil || !wait {
		if p != nil { // never queued: nobody else has it
			p.req, p.hook = nil, nil
			ch.spareCall.Store(p)
		}
		if err == nil && opts.record { // no-wait: assume success, as the server reports failure as a channel error
			ch.recordTopology(req, nil)
		}
		return callResult{queued: queued}, err
	}
	ch.await()
	defer ch.awaited()
	select {
	case r := <-p.reply:
		// Whoever resolved p is done with it: reuse it, reply channel and
		// all, for the next call. (An abandoned call's entry is not reused:
		// its late reply still has to land in its channel.)
		p.req, p.hook = nil, nil
		ch.spareCall.Store(p)
		r.queued = true
		return r, r.err
	case <-ctx.Done():
		return callResult{queued: true}, ch.ctxError(req, ctx.Err())
	}
}

// appendRestoring queues a connection recovery's own request (see
// callOpts.restoring) on a channel that recovers, without waiting for room:
// the recovery is the only sender meanwhile.
func (ch *Channel) appendRestoring(ctx context.Context, m Method, p *pendingCall) error {
	ch.mu.Lock()
	if ch.state != chRecovering {
		ch.mu.Unlock()
		if err := ch.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%w: channel %d is not recovering", ErrClosed, ch.id)
	}
	l := ch.link.Load()
	err := ch.appendLocked(l, m, p)
	ch.mu.Unlock()
	if err != nil {
		return l.deadErr(ctx) // waits for the link's end: never under ch.mu
	}
	return nil
}

// appendLocked queues m's frame on link l's writer and, once it is queued,
// records what m changes (noteSentLocked) and awaits p, if given, as its
// reply. ch.mu must be held. call and sendNowLocked are built on it.
func (ch *Channel) appendLocked(l *link, m Method, p *pendingCall) error {
	err := l.w.appendFrames(func(b []byte) ([]byte, error) {
		return appendMethodFrame(b, ch.id, m)
	})
	if err != nil {
		return err
	}
	ch.noteSentLocked(m)
	if p != nil {
		ch.calls.push(p)
	}
	return nil
}

// withSendLock runs fn with ch.mu held, and the link to write to, once the
// channel can take a new request m (m's kind and name are all that count:
// for the checks and error messages). First it runs wait (if given:
// publishes wait for blocked and flow there), again before each retry on a
// new link, then waits for room in the link's write queue and for a
// recovery to finish, bounded by ctx. fn
// appends under the lock so that what it appends is in order with reopens
// and confirms; if it fails because the link is ending, nothing went out,
// and withSendLock waits for the recovery and runs it again on the new link.
// It unlocks before it returns. It is the lock under call, and publish uses
// it directly for content frames.
func (ch *Channel) withSendLock(ctx context.Context, m Method, wait func(context.Context) error, fn func(l *link) error) error {
	for waitFirst := wait != nil; ; {
		if waitFirst {
			if err := wait(ctx); err != nil {
				return err
			}
			waitFirst = false
		}
		if l := ch.link.Load(); l != nil {
			if err := l.w.waitRoom(ctx); err != nil {
				return ch.ctxError(m, err)
			}
		}
		ch.mu.Lock()
		err := ch.usableLocked(m)
		if err == nil {
			l := ch.link.Load()
			if !l.ended() {
				err = fn(l)
				ch.mu.Unlock()
				if err == nil {
					return nil
				}
				if err = ch.sendError(ctx, l, m, err); err != errRetry {
					return err
				}
				waitFirst = wait != nil
				continue // never sent: it goes out once the connection has recovered
			}
			// Known dead: what it accepted now could never be written.
			// Wait until the channel is set to recover (or has ended).
			ch.mu.Unlock()
			if err := l.waitDetached(ctx); err != nil {
				return ch.ctxError(m, ctx.Err())
			}
			if ch.link.Load() == l && ch.Err() == nil && !ch.conn.isDone() && ch.conn.cfg.Recovery != nil {
				return closedBy(l.err) // never detached (cannot happen): do not spin
			}
			continue
		}
		if err != errRecovering {
			ch.mu.Unlock()
			return err
		}
		recovered := ch.recovered
		ch.mu.Unlock()
		if err := ch.waitRecovered(ctx, m, recovered); err != nil {
			return err
		}
	}
}

// waitRecovered waits for a recovering channel to be usable again (or to
// end), bounded by ctx; with Config.Recovery.FailFast it fails at once.
func (ch *Channel) waitRecovered(ctx context.Context, m Method, recovered <-chan struct{}) error {
	if ch.conn.cfg.Recovery != nil && ch.conn.cfg.Recovery.FailFast {
		return fmt.Errorf("amqp: %s on channel %d: %w", m.MethodName(), ch.id, ErrRecovering)
	}
	select {
	case <-recovered:
		return nil
	case <-ch.done:
		return nil // usableLocked reports why
	case <-ctx.Done():
		return fmt.Errorf("amqp: %s on channel %d: waiting for the connection to recover: %w", m.MethodName(), ch.id, ctx.Err())
	}
}

// sendNowLocked queues the library's own frames (close-ok, flow-ok, the
// pipelined reopen after a channel error, cancelling or closing what a
// caller abandoned, requeueing what nobody will read) at once, with ch.mu
// held. Unlike call it never waits, since it runs on the reader or under
// ch.mu. For a request with a reply, p (its req is set here) says what
// becomes of the reply: most often a hook the reader runs, with nobody
// waiting; Channel.Close waits on p.reply itself. It reports whether the
// frame was queued: a failed append means the link is ending, and its end
// fails everything; without a link (the channel waits for a recovery, and
// the server has forgotten it) there is nothing to send on.
func (ch *Channel) sendNowLocked(m Method, p *pendingCall) error {
	l := ch.link.Load()
	if l == nil {
		return errRecovering
	}
	if p != nil {
		p.req = m
	}
	return ch.appendLocked(l, m, p)
}

// complete hands a reply to the oldest pending call, checking that it is a
// reply to that call: anything else is the server breaking the protocol.
func (ch *Channel) complete(m Method, msg *Delivery) error {
	ch.mu.Lock()
	if ch.state == chClosed { // ended meanwhile: its calls were failed already
		ch.mu.Unlock()
		return nil
	}
	p := ch.calls.peek()
	if p == nil || !p.req.isReply(m.key()) {
		ch.mu.Unlock()
		want := "nothing"
		if p != nil {
			want = "a reply to " + p.req.MethodName()
		}
		return &Error{Code: CodeUnexpectedFrame, Connection: true,
			Reason: fmt.Sprintf("server sent %s on channel %d, expected %s", m.MethodName(), ch.id, want)}
	}
	ch.calls.pop()
	if p.reply != nil { // (the library's own calls, such as a reopen's steps, record nothing)
		ch.noteReplyLocked(p.req) // checked to be p's reply: record what it establishes
	}
	ch.mu.Unlock()
	p.resolve(callResult{m: m, msg: msg})
	return nil
}

// ctxError reports a call abandoned because its context ended.
func (ch *Channel) ctxError(m Method, err error) error {
	return fmt.Errorf("amqp: %s on channel %d: %w", m.MethodName(), ch.id, err)
}

// sendError explains why a frame could not be queued on link l: an
// encoding problem (after which the connection is fine), or the link ending.
// For the latter it waits until the channel has been ended or set to
// recover, and returns errRetry when the request should go out after the
// recovery instead.
func (ch *Channel) sendError(ctx context.Context, l *link, m Method, err error) error {
	if !errors.Is(err, errWriterDown) {
		return err
	}
	if err := l.waitDetached(ctx); err != nil { // the writer stops only as part of the link's end
		return ch.ctxError(m, ctx.Err())
	}
	if ch.Err() != nil || ch.conn.isDone() {
		if ch.conn.isDone() {
			return ch.conn.closedErr()
		}
		return ch.Err()
	}
	return errRetry
}

// callTyped is call for callers that want the reply as its concrete type.
func callTyped[R any](ctx context.Context, ch *Channel, req Method) (*R, error) {
	r, err := ch.call(ctx, req, callOpts{})
	if err != nil {
		return nil, err
	}
	if r.m == nil {
		return nil, nil // no-wait: no reply comes
	}
	reply, _ := r.m.(any).(*R) // the reader checked isReply, so this holds
	return reply, nil
}

// expectsReply reports whether the server will answer m: it is synchronous
// and, where the method has a no-wait flag, the flag is off.
func expectsReply(m Method) bool {
	if !m.synchronous() {
		return false
	}
	if nw, ok := m.(interface{ noWait() bool }); ok {
		return !nw.noWait()
	}
	return true
}

// replyKeys holds every method that answers some synchronous method.
var replyKeys = func() map[methodKey]bool {
	keys := map[methodKey]bool{}
	for _, req := range allMethodKeys {
		m := newMethod(req)
		for _, rep := range allMethodKeys {
			if m.isReply(rep) {
				keys[rep] = true
			}
		}
	}
	return keys
}()

// isReplyKey reports whether k is a reply method (such as queue.declare-ok),
// as opposed to a request or an asynchronous method.
func isReplyKey(k methodKey) bool { return replyKeys[k] }

// usableLocked reports why a new call cannot be made on the channel now.
func (ch *Channel) usableLocked(m Method) error {
	switch ch.state {
	case chClosing:
		return fmt.Errorf("%w: channel %d is closing", ErrClosed, ch.id)
	case chClosed:
		return ch.err
	case chRecovering:
		switch m.(type) {
		case *BasicAck, *BasicNack, *BasicReject:
			if ch.opened {
				// Deliveries already flow to consumers the recovery has
				// subscribed again; acking them must not wait for the rest
				// of the recovery, which may itself wait for the reader
				// that those unacknowledged deliveries hold up.
				return nil
			}
		}
		return errRecovering
	}
	return nil
}

// callTraced brackets a synchronous call with the CallTracer's hooks.
func (ch *Channel) callTraced(ctx context.Context, t CallTracer, req Method, call func(context.Context) (callResult, error)) (callResult, error) {
	ctx = t.TraceCallStart(ctx, ch, TraceCallStartData{Method: req})
	r, err := call(ctx)
	end := TraceCallEndData{Method: req, Err: err}
	if err == nil {
		end.Reply = r.m
	}
	t.TraceCallEnd(ctx, ch, end)
	return r, err
}
