package conformance

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// check is the code that checks one rule against a broker.
type check struct {
	rule    string // Rule.ID
	run     func(t *T)
	timeout time.Duration // 0: Options.CheckTimeout
	needs   need          // a hook it needs; such checks run alone, after the others
}

// need names a hook of Options that a check cannot do without.
type need int

const (
	needsNothing need = iota
	needsRestart      // Options.Restart
	needsAlarm        // Options.RaiseAlarm and ClearAlarm
)

var (
	registry   = map[string]*check{}
	registryMu sync.Mutex
)

// register adds the check of a rule; it panics on a rule checked twice or
// not known, so a typo fails every test of the package.
func register(ruleID string, run func(t *T)) *check {
	return registerTimeout(ruleID, 0, run)
}

func registerTimeout(ruleID string, timeout time.Duration, run func(t *T)) *check {
	return registerNeeds(ruleID, needsNothing, timeout, run)
}

// registerNeeds adds a check that needs a hook of Options: it is skipped
// without it, and otherwise runs alone, since the hook affects the whole
// broker.
func registerNeeds(ruleID string, needs need, timeout time.Duration, run func(t *T)) *check {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[ruleID]; dup {
		panic("conformance: rule " + ruleID + " checked twice")
	}
	c := &check{rule: ruleID, run: run, timeout: timeout, needs: needs}
	registry[ruleID] = c
	return c
}

// Checked returns the IDs of the rules that have a check, sorted.
func Checked() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	ids := make([]string, 0, len(registry))
	for id := range registry {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// T is what a check works with: sessions to the broker, unique names,
// cleanup, and the verdict. Pass, Fail and Skip end the check (like
// testing.T's FailNow, they must be called from the check's goroutine).
type T struct {
	ctx  context.Context
	run  *runner
	rule *Rule

	sessions []*amqpraw.Session
	channels map[*amqpraw.Session]uint16
	queues   []string
	exchs    []string
	seq      int

	seqPublished int  // publishes made by publishUntil
	restarted    bool // the check has called Restart

	verdict Verdict
	detail  string
}

// errEnd unwinds a check once its verdict is given.
var errEnd = errors.New("conformance: check ended")

func (t *T) end(v Verdict, format string, args ...any) {
	t.verdict, t.detail = v, fmt.Sprintf(format, args...)
	panic(errEnd)
}

// Pass ends the check with PASS; detail says what the broker did.
func (t *T) Pass(format string, args ...any) { t.end(Pass, format, args...) }

// Fail ends the check with FAIL; detail says what the broker did instead.
func (t *T) Fail(format string, args ...any) { t.end(Fail, format, args...) }

// Skip ends the check with SKIP; detail says why.
func (t *T) Skip(format string, args ...any) { t.end(Skip, format, args...) }

// Context is the check's context, bounded by its timeout.
func (t *T) Context() context.Context { return t.ctx }

// step bounds one expected reply.
func (t *T) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.ctx, t.run.opts.ReplyTimeout)
}

// quiet bounds a wait during which nothing should arrive.
func (t *T) quiet() (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.ctx, t.run.opts.QuietPeriod)
}

// Restart restarts the broker through Options.Restart, keeping its data.
// The checks that restart the broker share one restart: Restart returns
// once all of them have called it and the broker is back.
func (t *T) Restart() {
	t.restarted = true
	t.Must(t.run.restarts.arrive(t.ctx), "restarting the broker")
}

// RaiseAlarm raises a resource alarm through Options.RaiseAlarm.
func (t *T) RaiseAlarm() {
	t.Must(t.run.opts.RaiseAlarm(t.ctx), "raising the resource alarm")
}

// ClearAlarm clears it through Options.ClearAlarm.
func (t *T) ClearAlarm() {
	t.Must(t.run.opts.ClearAlarm(t.ctx), "clearing the resource alarm")
}

// Dial opens a socket to the broker and nothing else.
func (t *T) Dial() *amqpraw.Session {
	s, err := amqpraw.Dial(t.ctx, t.run.addr, amqpraw.Options{TLS: t.run.tls, Handshake: t.run.handshake})
	if err != nil {
		t.Fail("cannot connect to the broker: %v", err)
	}
	t.sessions = append(t.sessions, s)
	return s
}

// Open opens a connection with the whole handshake done.
func (t *T) Open() *amqpraw.Session {
	return t.OpenWith(amqpraw.Handshake{})
}

// OpenWith opens a connection with a handshake that h changes.
func (t *T) OpenWith(h amqpraw.Handshake) *amqpraw.Session {
	s := t.Dial()
	ctx, cancel := t.step()
	defer cancel()
	if err := s.Handshake(ctx, h); err != nil {
		t.Fail("cannot open a connection: %v", err)
	}
	return s
}

// Channel opens the session's next channel number and returns it.
func (t *T) Channel(s *amqpraw.Session) uint16 {
	if t.channels == nil {
		t.channels = map[*amqpraw.Session]uint16{}
	}
	t.channels[s]++
	ch := t.channels[s]
	ctx, cancel := t.step()
	defer cancel()
	if err := s.OpenChannel(ctx, ch); err != nil {
		t.Fail("cannot open channel %d: %v", ch, err)
	}
	return ch
}

// Name returns a name unique to this run and check, for a queue or an
// exchange the check creates; the cleanup deletes it as both.
func (t *T) Name(what string) string {
	t.seq++
	n := fmt.Sprintf("%s.%s.%s%d", t.run.prefix, strings.NewReplacer("/", ".", " ", "_").Replace(t.rule.ID), what, t.seq)
	t.queues = append(t.queues, n)
	t.exchs = append(t.exchs, n)
	return n
}

// forget records a server-named queue for the cleanup.
func (t *T) forget(queue string) { t.queues = append(t.queues, queue) }

// Must fails the check when a setup step did not work: the broker is not
// judged on it, but nothing after it would mean anything.
func (t *T) Must(err error, what string) {
	if err != nil {
		t.Fail("%s: %v", what, err)
	}
}

// Call sends m on channel ch and returns the reply R; any other answer
// fails the check as a setup failure.
func Call[R amqp.Method](t *T, s *amqpraw.Session, ch uint16, m amqp.Method) R {
	ctx, cancel := t.step()
	defer cancel()
	r, err := amqpraw.Call[R](ctx, s, ch, m)
	t.Must(err, m.MethodName())
	return r
}

// Declare declares a queue with q's settings (a fresh name when q.Queue is
// empty and server naming is not wanted is the caller's to ask for).
func (t *T) Declare(s *amqpraw.Session, ch uint16, q amqp.QueueDeclare) string {
	ok := Call[*amqp.QueueDeclareOk](t, s, ch, &q)
	t.forget(ok.Queue)
	return ok.Queue
}

// ExchangeDeclare declares an exchange.
func (t *T) ExchangeDeclare(s *amqpraw.Session, ch uint16, x amqp.ExchangeDeclare) {
	Call[*amqp.ExchangeDeclareOk](t, s, ch, &x)
}

// Publish publishes body to exchange with routing key.
func (t *T) Publish(s *amqpraw.Session, ch uint16, exchange, key string, props amqp.Properties, body string) {
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendContent(ctx, ch, &amqp.BasicPublish{Exchange: exchange, RoutingKey: key}, props, []byte(body)), "basic.publish")
}

// Get fetches one message with basic.get in no-ack mode; nil when the
// queue is empty.
func (t *T) Get(s *amqpraw.Session, ch uint16, queue string) *amqpraw.Command {
	return t.get(s, ch, queue, &amqp.BasicGet{Queue: queue, NoAck: true})
}

// GetUnacked is Get for a message to be acknowledged.
func (t *T) GetUnacked(s *amqpraw.Session, ch uint16, queue string) *amqpraw.Command {
	return t.get(s, ch, queue, &amqp.BasicGet{Queue: queue})
}

func (t *T) get(s *amqpraw.Session, ch uint16, queue string, get *amqp.BasicGet) *amqpraw.Command {
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, get), "basic.get")
	cmd, err := s.ReadCommand(ctx)
	t.Must(err, "basic.get")
	switch cmd.Method.(type) {
	case *amqp.BasicGetOk:
		return cmd
	case *amqp.BasicGetEmpty:
		return nil
	}
	t.Fail("basic.get on %q: got %v", queue, cmd)
	return nil
}

// Sync makes sure the broker has handled everything sent on ch before:
// basic.qos is a harmless synchronous method. It also surfaces a channel
// error that an asynchronous method caused.
func (t *T) Sync(s *amqpraw.Session, ch uint16) error {
	ctx, cancel := t.step()
	defer cancel()
	_, err := amqpraw.Call[*amqp.BasicQosOk](ctx, s, ch, &amqp.BasicQos{})
	return err
}

// ExpectChannelClose sends m on ch and passes when the broker closes the
// channel with code; anything else fails.
func (t *T) ExpectChannelClose(s *amqpraw.Session, ch uint16, m amqp.Method, code amqp.ReplyCode) {
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, m), m.MethodName())
	c, err := s.ExpectChannelClose(ctx, ch, code)
	if err != nil {
		t.Fail("%s: %v", m.MethodName(), brief(err))
	}
	t.Pass("%s: channel.close %d %s", m.MethodName(), c.ReplyCode, c.ReplyText)
}

// ExpectConnectionClose passes when the broker closes the connection
// with code and then the socket; anything else fails.
func (t *T) ExpectConnectionClose(s *amqpraw.Session, code amqp.ReplyCode, what string) {
	ctx, cancel := t.step()
	defer cancel()
	c, err := s.ExpectConnectionClose(ctx, code)
	if err != nil {
		t.Fail("%s: %v", what, brief(err))
	}
	t.Pass("%s: connection.close %d %s", what, c.ReplyCode, c.ReplyText)
}

// ExpectReply sends m and passes when the reply is R.
func ExpectReply[R amqp.Method](t *T, s *amqpraw.Session, ch uint16, m amqp.Method) {
	ctx, cancel := t.step()
	defer cancel()
	r, err := amqpraw.Call[R](ctx, s, ch, m)
	if err != nil {
		t.Fail("%s: %v", m.MethodName(), brief(err))
	}
	t.Pass("%s: %s", m.MethodName(), r.MethodName())
}

// brief strips the package prefix from an amqpraw error.
func brief(err error) string {
	return strings.TrimPrefix(err.Error(), "amqpraw: ")
}

// Fresh opens a connection and a channel on it.
func (t *T) Fresh() (*amqpraw.Session, uint16) {
	s := t.Open()
	return s, t.Channel(s)
}

// FreshQueue opens a connection and a channel, declares a queue with a
// name of the check's, and publishes bodies to it.
func (t *T) FreshQueue(bodies ...string) (*amqpraw.Session, uint16, string) {
	s, ch := t.Fresh()
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	for _, b := range bodies {
		t.Publish(s, ch, "", q, amqp.Properties{}, b)
	}
	return s, ch, q
}

// Consume starts a consumer and returns its tag.
func (t *T) Consume(s *amqpraw.Session, ch uint16, c amqp.BasicConsume) string {
	return Call[*amqp.BasicConsumeOk](t, s, ch, &c).ConsumerTag
}

// Next expects the next delivery on ch.
func (t *T) Next(s *amqpraw.Session, ch uint16, what string) *amqpraw.Command {
	ctx, cancel := t.step()
	defer cancel()
	cmd, err := amqpraw.ExpectCommand[*amqp.BasicDeliver](ctx, s, ch)
	if err != nil {
		t.Fail("%s: %v", what, brief(err))
	}
	return cmd
}

// Quiet returns the first command that arrives within the quiet period,
// or nil when none does.
func (t *T) Quiet(s *amqpraw.Session) *amqpraw.Command {
	ctx, cancel := t.quiet()
	defer cancel()
	cmd, err := s.ReadCommand(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fail("while waiting: %v", brief(err))
	}
	return cmd
}

// track records a name the cleanup deletes (as a queue and an exchange).
func (t *T) track(name string) {
	t.queues = append(t.queues, name)
	t.exchs = append(t.exchs, name)
}

// deliveryTag returns the delivery tag of a basic.deliver or basic.get-ok.
func deliveryTag(cmd *amqpraw.Command) uint64 {
	switch m := cmd.Method.(type) {
	case *amqp.BasicDeliver:
		return m.DeliveryTag
	case *amqp.BasicGetOk:
		return m.DeliveryTag
	}
	return 0
}

// redelivered reports the redelivered flag of a delivery.
func redelivered(cmd *amqpraw.Command) bool {
	switch m := cmd.Method.(type) {
	case *amqp.BasicDeliver:
		return m.Redelivered
	case *amqp.BasicGetOk:
		return m.Redelivered
	}
	return false
}
