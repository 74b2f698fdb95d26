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
	// Nil for the library's own calls, which use then instead.
	reply chan callResult
	// then runs on the reader goroutine with the outcome of an internal call
	// (such as re-applying qos after a channel was reopened). It must not block.
	then func(callResult)
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
}

func (p *pendingCall) resolve(r callResult) {
	if p.hook != nil {
		p.hook(r)
	}
	if p.then != nil {
		p.then(r)
		return
	}
	p.reply <- r
}

// callQueue is a FIFO of pending calls. It is not synchronized: its owner's
// mutex guards it.
type callQueue struct {
	calls []*pendingCall
	head  int
}

func (q *callQueue) push(p *pendingCall) { q.calls = append(q.calls, p) }

func (q *callQueue) len() int { return len(q.calls) - q.head }

func (q *callQueue) peek() *pendingCall {
	if q.head == len(q.calls) {
		return nil
	}
	return q.calls[q.head]
}

func (q *callQueue) pop() *pendingCall {
	p := q.peek()
	if p == nil {
		return nil
	}
	q.calls[q.head] = nil
	q.head++
	if q.head == len(q.calls) { // empty: reuse the backing array from the start
		q.calls, q.head = q.calls[:0], 0
	}
	return p
}

// drain removes and returns every pending call.
func (q *callQueue) drain() []*pendingCall {
	out := q.calls[q.head:]
	q.calls, q.head = nil, 0
	return out
}

// call sends the synchronous method req on the channel and waits for its
// reply, bounded by ctx. Cancelling ctx before the request is queued for the
// socket sends nothing; cancelling it later returns at once, and the reply,
// when it comes, is discarded.
func (ch *Channel) call(ctx context.Context, req Method) (callResult, error) {
	return ch.callWithHook(ctx, req, nil)
}

// callWithHook is call with a hook that runs on the reader when the reply
// (or the failure) arrives, whether or not the caller still waits.
func (ch *Channel) callWithHook(ctx context.Context, req Method, hook func(callResult)) (callResult, error) {
	if err := ctx.Err(); err != nil {
		return callResult{}, ch.ctxError(req, err)
	}
	if err := ch.conn.w.waitRoom(ctx); err != nil {
		return callResult{}, ch.ctxError(req, err)
	}
	ch.mu.Lock()
	if err := ch.usableLocked(req); err != nil {
		ch.mu.Unlock()
		return callResult{}, err
	}
	err := ch.conn.w.appendFrames(func(b []byte) ([]byte, error) {
		return appendMethodFrame(b, ch.id, req)
	})
	if err != nil {
		ch.mu.Unlock()
		return callResult{}, ch.sendError(req, err)
	}
	ch.noteSentLocked(req)
	if !expectsReply(req) {
		ch.mu.Unlock()
		return callResult{}, nil
	}
	p := ch.spareCall.Swap(nil)
	if p == nil {
		p = &pendingCall{reply: make(chan callResult, 1)}
	}
	p.req, p.hook = req, hook
	ch.calls.push(p)
	ch.mu.Unlock()
	select {
	case r := <-p.reply:
		// Whoever resolved p is done with it: reuse it, reply channel and
		// all, for the next call. (An abandoned call's entry is not reused:
		// its late reply still has to land in its channel.)
		p.req, p.hook = nil, nil
		ch.spareCall.Store(p)
		return r, r.err
	case <-ctx.Done():
		return callResult{}, ch.ctxError(req, ctx.Err())
	}
}

// send sends a method that has no reply (or whose reply the caller does not
// want: no-wait). It waits for room in the write queue, bounded by ctx.
func (ch *Channel) send(ctx context.Context, m Method) error { return ch.sendIf(ctx, m, nil) }

// sendIf is send with a precondition checked under the channel lock, right
// before the frame is queued; if it fails, nothing is sent.
func (ch *Channel) sendIf(ctx context.Context, m Method, precondition func() error) error {
	if err := ch.conn.w.waitRoom(ctx); err != nil {
		return ch.ctxError(m, err)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := ch.usableLocked(m); err != nil {
		return err
	}
	if precondition != nil {
		if err := precondition(); err != nil {
			return err
		}
	}
	if err := ch.conn.w.appendFrames(func(b []byte) ([]byte, error) {
		return appendMethodFrame(b, ch.id, m)
	}); err != nil {
		return ch.sendError(m, err)
	}
	ch.noteSentLocked(m)
	return nil
}

// sendLocked queues frames for internal protocol traffic (close-ok, reopen)
// from the reader, never waiting. ch.mu must be held.
func (ch *Channel) sendLocked(m Method, then func(callResult)) {
	err := ch.conn.w.appendFrames(func(b []byte) ([]byte, error) {
		return appendMethodFrame(b, ch.id, m)
	})
	if err == nil && then != nil {
		ch.calls.push(&pendingCall{req: m, then: then})
	}
	// A failed append means the connection is ending; shutdown fails everything.
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
	ch.mu.Unlock()
	p.resolve(callResult{m: m, msg: msg})
	return nil
}

// ctxError reports a call abandoned because its context ended.
func (ch *Channel) ctxError(m Method, err error) error {
	return fmt.Errorf("amqp: %s on channel %d: %w", m.MethodName(), ch.id, err)
}

// sendError explains why a frame could not be queued: the connection ending,
// or an encoding problem (after which the connection is fine).
func (ch *Channel) sendError(m Method, err error) error {
	if errors.Is(err, errWriterDown) {
		<-ch.conn.done // the writer stops only as part of shutdown
		return ch.conn.closedErr()
	}
	return err
}

// callTyped is call for callers that want the reply as its concrete type.
func callTyped[R any](ctx context.Context, ch *Channel, req Method) (*R, error) {
	r, err := ch.call(ctx, req)
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
