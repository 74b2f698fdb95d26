package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// RecoveryConfig turns on and tunes automatic connection recovery
// ([Config.Recovery]). The zero value is a working configuration: unlimited
// attempts with backoff from 100 ms to 10 s, topology recovery on, and
// calls that wait for the recovery (bounded by their context).
type RecoveryConfig struct {
	// MinBackoff is the delay before the first reconnection attempt; it
	// doubles with each failed attempt up to MaxBackoff. Each delay is
	// jittered (between half and all of it) so that many clients do not
	// reconnect in step. Zero means 100 ms.
	MinBackoff time.Duration
	// MaxBackoff caps the delay between attempts. Zero means 10 s.
	MaxBackoff time.Duration
	// MaxAttempts is how many reconnection attempts (each trying every
	// address once) are made before the connection ends with the last
	// attempt's error. Zero means no limit.
	MaxAttempts int

	// FailFast makes calls made while the connection is recovering fail at
	// once with an error matching ErrRecovering, instead of waiting for the
	// recovery bounded by their context.
	FailFast bool

	// Republish makes publishes that were awaiting their confirmation when
	// the connection was lost go out again on the recovered channel, in
	// their original order; their Confirmation then resolves with the new
	// ack or nack (DeliveryTag changes to the new sequence number). The
	// library keeps each unconfirmed Publishing, body included, until it is
	// confirmed, so the body must not be modified until then. Without
	// Republish such a Confirmation resolves with an error matching
	// ErrPublishLost, and the application decides. Either way the message
	// may have reached the queue before the connection was lost, so
	// consumers can see it twice.
	Republish bool

	// SkipTopology turns off topology recovery: exchanges, queues and
	// bindings declared through the connection are not declared again.
	// Channels and consumers are still recovered.
	SkipTopology bool

	// AttemptTimeout bounds each address's try in the first reconnection
	// attempt (TCP dial, TLS and AMQP handshakes), so that a node that
	// stopped answering, as in a network partition, holds the recovery
	// back by at most this long before the next address or attempt. It
	// doubles with each further attempt, up to Config.ConnectionTimeout, so
	// that a node that is merely slow (many clients reconnecting at once,
	// TLS) is still reached. Zero means 5 s; a negative value means
	// Config.ConnectionTimeout throughout.
	AttemptTimeout time.Duration

	// ProtocolErrorRepeats is how many freshly recovered connections in a
	// row the same protocol error may end before recovery gives up (with a
	// RecoveryFailed event) and the connection ends with that error. A
	// protocol error is this client closing the connection because the
	// server sent something it could not parse or accept, such as broken
	// framing; the loss is recovered like any other, but a server that
	// sends the same thing again at once (before, or within 10 s after, the
	// new connection is restored) would otherwise be redialled for ever.
	// Errors of the same kind count as the same: the same reply code, or
	// the same decoding failure whatever its details. Zero
	// means 3 (so the fourth such loss in a row is final); negative means
	// no limit.
	ProtocolErrorRepeats int
}

// DefaultAttemptTimeout is RecoveryConfig.AttemptTimeout's default.
const DefaultAttemptTimeout = 5 * time.Second

// DefaultProtocolErrorRepeats is RecoveryConfig.ProtocolErrorRepeats's default.
const DefaultProtocolErrorRepeats = 3

// protocolRepeatWindow is how soon after its handshake a recovered
// connection must fail with the previous connection's protocol error for
// that to count as a repeat.
const protocolRepeatWindow = 10 * time.Second

// attemptTimeout is the bound on one address's try in the given attempt
// (from 1) while recovering: AttemptTimeout, doubling with each attempt up
// to connectionTimeout (negative: no cap).
func (r RecoveryConfig) attemptTimeout(connectionTimeout time.Duration, attempt int) time.Duration {
	d := r.AttemptTimeout
	switch {
	case d < 0:
		return connectionTimeout
	case d == 0:
		d = DefaultAttemptTimeout
	}
	for i := 1; i < attempt && (connectionTimeout <= 0 || d < connectionTimeout); i++ {
		d *= 2
	}
	if connectionTimeout > 0 {
		d = min(d, connectionTimeout)
	}
	return d
}

func (r RecoveryConfig) withDefaults() RecoveryConfig {
	if r.MinBackoff <= 0 {
		r.MinBackoff = 100 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 10 * time.Second
	}
	r.MaxBackoff = max(r.MaxBackoff, r.MinBackoff)
	return r
}

// backoff returns the jittered delay before the given attempt (from 1).
func (r RecoveryConfig) backoff(attempt int) time.Duration {
	d := r.MinBackoff
	for i := 1; i < attempt && d < r.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// String describes the configuration.
func (r RecoveryConfig) String() string {
	return fmt.Sprintf("{MinBackoff:%s MaxBackoff:%s MaxAttempts:%d FailFast:%t Republish:%t SkipTopology:%t AttemptTimeout:%s ProtocolErrorRepeats:%d}",
		r.MinBackoff, r.MaxBackoff, r.MaxAttempts, r.FailFast, r.Republish, r.SkipTopology, r.AttemptTimeout, r.ProtocolErrorRepeats)
}

// RecoveryEventKind tells what a [RecoveryEvent] reports.
type RecoveryEventKind uint8

const (
	// RecoveryStarted: the connection was lost (Err says why) and recovery began.
	RecoveryStarted RecoveryEventKind = iota + 1
	// RecoveryAttemptFailed: one reconnection attempt failed (Err); another follows after a backoff.
	RecoveryAttemptFailed
	// RecoverySucceeded: a new connection to Addr is open and every channel,
	// entity and consumer that could be recovered is.
	RecoverySucceeded
	// RecoveryFailed: recovery gave up (Err: a fatal error such as 403
	// ACCESS_REFUSED, or the last attempt's error after MaxAttempts); the
	// connection has ended with Err.
	RecoveryFailed
	// RecoveryEntityFailed: one entity (Entity names it) could not be
	// recovered (Err). A consumer that failed has ended with Err; a channel
	// that failed has ended.
	RecoveryEntityFailed
	// RecoveryQueueRenamed: a server-named queue was declared again and got
	// a new name (OldName, NewName); its bindings and consumers follow it.
	RecoveryQueueRenamed
	// RecoveryConsumerResubscribed: a consumer the server had cancelled
	// (ConsumerOptions.Resubscribe) is subscribed again (Entity names it).
	RecoveryConsumerResubscribed
)

var recoveryEventNames = [...]string{"", "started", "attempt failed", "succeeded", "failed", "entity failed", "queue renamed", "consumer resubscribed"}

func (k RecoveryEventKind) String() string {
	if int(k) < len(recoveryEventNames) {
		return recoveryEventNames[k]
	}
	return fmt.Sprintf("RecoveryEventKind(%d)", uint8(k))
}

// RecoveryEvent reports a step of connection recovery, or of a consumer's
// resubscription; see [Connection.OnRecovery].
type RecoveryEvent struct {
	Kind    RecoveryEventKind
	Err     error  // why: the lost connection's cause, the failed attempt's or entity's error
	Attempt int    // the reconnection attempt, from 1 (AttemptFailed, Succeeded, Failed)
	Addr    string // the node reconnected to (Succeeded)
	Entity  string // what failed or was resubscribed, e.g. `queue "jobs"` or `consumer "ctag-1" on queue "jobs"`

	OldName, NewName string // RecoveryQueueRenamed
}

func (e RecoveryEvent) String() string {
	s := "amqp: recovery " + e.Kind.String()
	if e.Entity != "" {
		s += ": " + e.Entity
	}
	if e.OldName != "" || e.NewName != "" {
		s += fmt.Sprintf(": queue %q is now %q", e.OldName, e.NewName)
	}
	if e.Addr != "" {
		s += " (" + e.Addr + ")"
	}
	if e.Attempt > 0 {
		s += fmt.Sprintf(" [attempt %d]", e.Attempt)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// OnRecovery registers fn to be told of each recovery step: start, each
// failed attempt, success or giving up, and each entity that could not be
// recovered or was renamed. Calls run in order on the connection's
// callback goroutine, never on the reader.
func (c *Connection) OnRecovery(fn func(RecoveryEvent)) {
	c.rec.mu.Lock()
	c.rec.listeners = append(c.rec.listeners, fn)
	c.rec.mu.Unlock()
}

// Recovering reports whether the connection is being recovered right now.
func (c *Connection) Recovering() bool { return !c.isDone() && c.rec.active() }

func (c *Connection) emit(ev RecoveryEvent) {
	c.rec.mu.Lock()
	listeners := c.rec.listeners
	c.rec.mu.Unlock()
	c.observeRecovery(ev)
	for _, fn := range listeners {
		c.events.push(func() { fn(ev) })
	}
}

// recoveryState is the connection's side of recovery: whether one runs,
// who listens, and the topology to declare again.
type recoveryState struct {
	mu         sync.Mutex
	recovering bool                  // guarded by mu
	up         chan struct{}         // closed while not recovering; guarded by mu
	listeners  []func(RecoveryEvent) // guarded by mu
	topo       topology

	// The kind of protocol error that ended the last link, and how many
	// links in a row it ended at once after they were restored; guarded by mu.
	protocolErr     string
	protocolRepeats int
}

func (r *recoveryState) init() {
	r.up = make(chan struct{})
	close(r.up)
	r.topo.init()
}

func (r *recoveryState) active() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recovering
}

// begin marks a recovery as running; false if one already runs.
func (r *recoveryState) begin() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recovering {
		return false
	}
	r.recovering = true
	r.up = make(chan struct{})
	return true
}

// end marks the recovery as done on link l, unless l has already ended too,
// in which case the recovery must go on (false).
func (r *recoveryState) end(l *link) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.ended() {
		return false
	}
	r.recovering = false
	close(r.up)
	return true
}

// finish releases waiters when the connection has ended.
func (r *recoveryState) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recovering {
		r.recovering = false
		close(r.up)
	}
}

func (r *recoveryState) upChan() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up
}

// waitUp waits while the connection recovers, bounded by ctx (or fails
// fast, by config), and reports an ended connection.
func (c *Connection) waitUp(ctx context.Context) error {
	for {
		if c.isDone() {
			return c.closedErr()
		}
		up := c.rec.upChan()
		select {
		case <-up:
			if l := c.cur.Load(); l.ended() && !c.isDone() {
				// The link just died: recovery starts, or the connection ends.
				if err := l.waitDetached(ctx); err != nil {
					return err
				}
				continue
			}
			return nil
		default:
		}
		if c.cfg.Recovery.FailFast {
			return ErrRecovering
		}
		select {
		case <-up:
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("amqp: waiting for the connection to recover: %w", ctx.Err())
		}
	}
}

func (c *Connection) republishing() bool {
	return c.cfg.Recovery != nil && c.cfg.Recovery.Republish
}

// shouldRecover decides, once for each link as it ends, whether recovery
// replaces it: with recovery on and Close not called, for the causes
// shouldReconnect accepts, and for a protocol error unless the same one has
// now ended ProtocolErrorRepeats recovered links in a row at once; then it
// reports RecoveryFailed and the connection ends with the error.
func (c *Connection) shouldRecover(l *link, cause error) bool {
	rc := c.cfg.Recovery
	if rc == nil || c.closeRequested() {
		return false
	}
	var pe *peerProtocolError
	c.rec.mu.Lock()
	if !errors.As(cause, &pe) {
		c.rec.protocolErr, c.rec.protocolRepeats = "", 0
		c.rec.mu.Unlock()
		return shouldReconnect(cause)
	}
	usable := l.usable.Load()
	atOnce := usable == 0 || time.Since(time.Unix(0, usable)) < protocolRepeatWindow
	if kind := pe.kind(); kind == c.rec.protocolErr && atOnce {
		c.rec.protocolRepeats++
	} else {
		c.rec.protocolErr, c.rec.protocolRepeats = kind, 0
	}
	repeats := c.rec.protocolRepeats
	c.rec.mu.Unlock()
	limit := rc.ProtocolErrorRepeats
	if limit == 0 {
		limit = DefaultProtocolErrorRepeats
	}
	if limit > 0 && repeats >= limit {
		c.emit(RecoveryEvent{Kind: RecoveryFailed, Err: fmt.Errorf(
			"amqp: recovery gave up: the same protocol error ended %d recovered connections in a row: %w", repeats, cause)})
		return false
	}
	return true
}

// shouldReconnect reports whether a link that ended with cause is worth
// replacing: network failures, heartbeat timeouts and the server closes that
// a new connection may not meet again (320 CONNECTION_FORCED, 506
// RESOURCE_ERROR, 541 INTERNAL_ERROR). Protocol errors the server reports
// (a close naming our fault) and refusals are not.
func shouldReconnect(cause error) bool {
	var e *Error
	if errors.As(cause, &e) {
		switch e.Code {
		case CodeConnectionForced, CodeResourceError, CodeInternalError:
			return e.Server
		}
		return false
	}
	return errors.Is(cause, ErrConnectionLost) || errors.Is(cause, ErrHeartbeatTimeout)
}

// fatalDialError reports a reconnection failure that retrying cannot fix:
// the server refused the credentials or the vhost.
func fatalDialError(err error) bool {
	return errors.Is(err, ErrAccessRefused) || errors.Is(err, ErrNotAllowed) || errors.Is(err, ErrAuthentication)
}

// startRecovery begins replacing link l, unless a recovery already runs (it
// is then restoring onto l, and handles l's end itself).
func (c *Connection) startRecovery(l *link, cause error) {
	if !c.rec.begin() {
		return
	}
	c.wg.Add(1)
	go c.recoverLoop(l, cause)
}

// recoverLoop is the reconnecting goroutine: it retires the lost link,
// then dials with backoff until a new link is up and everything is restored
// on it, or the connection ends.
func (c *Connection) recoverLoop(lost *link, cause error) {
	defer c.wg.Done()
	rc := c.cfg.Recovery
	ctx, stop := contextUntil(context.Background(), c.closeCalled, nil, nil) // Close stops the recovery wherever it is
	defer stop()

	c.retire(lost, cause)
	c.emit(RecoveryEvent{Kind: RecoveryStarted, Err: cause})
	start := (slices.Index(c.cfg.Addrs, lost.addr) + 1) % len(c.cfg.Addrs)
	var lastErr error
	for attempt := 1; ; attempt++ {
		if rc.MaxAttempts > 0 && attempt > rc.MaxAttempts {
			err := fmt.Errorf("amqp: recovery gave up after %d attempts: %w", rc.MaxAttempts, lastErr)
			c.emit(RecoveryEvent{Kind: RecoveryFailed, Err: err, Attempt: attempt - 1})
			c.finalize(err)
			return
		}
		t := time.NewTimer(rc.backoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.finalize(ErrClosed)
			return
		}
		l, idx, err := c.dialAny(ctx, start, rc.attemptTimeout(c.cfg.ConnectionTimeout, attempt))
		if err != nil {
			if c.closeRequested() {
				c.finalize(ErrClosed)
				return
			}
			if fatalDialError(err) {
				c.emit(RecoveryEvent{Kind: RecoveryFailed, Err: err, Attempt: attempt})
				c.finalize(err)
				return
			}
			lastErr = err
			c.emit(RecoveryEvent{Kind: RecoveryAttemptFailed, Err: err, Attempt: attempt})
			continue
		}
		start = idx
		c.cur.Store(l)
		l.start()
		err = c.restore(ctx, l)
		if err == nil && c.rec.end(l) {
			l.usable.Store(time.Now().UnixNano())
			c.emit(RecoveryEvent{Kind: RecoverySucceeded, Attempt: attempt, Addr: l.addr})
			if c.closeRequested() {
				// Close may have seen the old link and be waiting for the
				// end, not knowing about this one.
				l.shutdown(ErrClosed)
			}
			return
		}
		// The new link failed while we restored onto it, or Close was called.
		if c.closeRequested() {
			// If l was still up, its end sees closeRequested and ends the
			// connection; if it had died already, its end left it to us.
			l.shutdown(ErrClosed)
			c.finalize(ErrClosed)
			l.markDetached()
			return
		}
		if err == nil {
			err = l.err
		} else if !l.ended() {
			// restore reports only the end of l or ctx; anything else is a
			// bug, but must not leave the recovery waiting for l to end.
			l.shutdown(fmt.Errorf("%w: recovery failed: %w", ErrConnectionLost, err))
		}
		<-l.done
		if !l.reconnect {
			return // linkEnded ended the connection
		}
		c.retire(l, l.err)
		lastErr = err
		c.emit(RecoveryEvent{Kind: RecoveryAttemptFailed, Err: err, Attempt: attempt})
	}
}

// retire detaches every channel from the lost link l once its reader has
// exited, so that no frame of l can reach a channel after it was set to
// recover. Channels then wait for the new link.
func (c *Connection) retire(l *link, cause error) {
	<-l.readerDone
	// A connection.blocked the reader handled after linkEnded reopened the
	// gate would otherwise outlive the link: the new one starts unblocked.
	c.unblock()
	lost := closedBy(cause)
	for _, ch := range c.channelList() {
		if ch.link.Load() == l {
			ch.detach(lost)
		}
	}
	l.markDetached()
}

// restore brings everything back on the new link l: the topology, then each
// channel with its modes, consumers and (with Republish) unconfirmed
// publishes. An entity that fails is reported and skipped; an error is
// returned only when l or ctx ends.
func (c *Connection) restore(ctx context.Context, l *link) error {
	// Replies stop coming when l ends, and the calls waiting for them are
	// failed only once the recovery retires l: stop waiting at l's end.
	ctx, stop := contextUntil(ctx, l.done, nil, nil)
	defer stop()
	if !c.cfg.Recovery.SkipTopology {
		if err := c.restoreTopology(ctx, l); err != nil {
			return err
		}
	}
	for _, ch := range c.channelList() {
		if err := ch.reattach(ctx, l); err != nil {
			return err
		}
	}
	return nil
}

// contextUntil returns a context that ends with parent or as soon as one of
// a, b or c (nil ones never) closes, and a stop function that ends it and
// returns once its watching goroutine has exited, so no goroutine outlives
// the caller.
func contextUntil(parent context.Context, a, b, c <-chan struct{}) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-a:
		case <-b:
		case <-c:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, func() { cancel(); <-exited }
}

// linkErr returns the error that ended l or ctx, if either has ended.
func linkErr(ctx context.Context, l *link) error {
	if l.ended() {
		return closedBy(l.err)
	}
	return ctx.Err()
}

// observeRecovery reports a recovery step.
func (c *Connection) observeRecovery(ev RecoveryEvent) {
	if t := c.tr.recovery; t != nil {
		c.events.push(func() { t.TraceRecovery(c, ev) })
	}
	log := c.log
	if log == nil {
		return
	}
	level := slog.LevelWarn
	if int(ev.Kind) < len(recoveryLevels) {
		level = recoveryLevels[ev.Kind]
	}
	attrs := []slog.Attr{slog.String("event", ev.Kind.String())}
	if ev.Attempt > 0 {
		attrs = append(attrs, slog.Int("attempt", ev.Attempt))
	}
	if ev.Addr != "" {
		attrs = append(attrs, slog.String("addr", ev.Addr))
	}
	if ev.Entity != "" {
		attrs = append(attrs, slog.String("entity", ev.Entity))
	}
	if ev.OldName != "" || ev.NewName != "" {
		attrs = append(attrs, slog.String("old_name", ev.OldName), slog.String("new_name", ev.NewName))
	}
	if ev.Err != nil {
		attrs = append(attrs, slog.Any("error", ev.Err))
	}
	c.events.push(func() { log.LogAttrs(context.Background(), level, "amqp: recovery "+ev.Kind.String(), attrs...) })
}

// recoveryLevels are the levels recovery events are logged at, by kind.
var recoveryLevels = [...]slog.Level{
	RecoveryStarted:              slog.LevelWarn,
	RecoveryAttemptFailed:        slog.LevelWarn,
	RecoverySucceeded:            slog.LevelInfo,
	RecoveryFailed:               slog.LevelError,
	RecoveryEntityFailed:         slog.LevelWarn,
	RecoveryQueueRenamed:         slog.LevelInfo,
	RecoveryConsumerResubscribed: slog.LevelInfo,
}
