package amqp_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// General test helpers: contexts, waits and time budgets, allocation counts,
// raw content, a recording Tracer.

// testCtx is a context bounded well inside the suite's time budget.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// reservedClosedPort returns a loopback address where nothing listens.
func reservedClosedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// allocTries is how many times leastAllocsPerRun may measure.
const allocTries = 3

// leastAllocsPerRun is testing.AllocsPerRun taken up to allocTries times,
// stopping at the first zero: AllocsPerRun counts every allocation in the
// process, and a goroutine an earlier test left winding down can allocate
// during one measurement, while an allocation of f's own shows in all of
// them. f must be callable allocTries*(runs+1) times.
func leastAllocsPerRun(runs int, f func()) float64 {
	least := testing.AllocsPerRun(runs, f)
	for i := 1; i < allocTries && least > 0; i++ {
		least = min(least, testing.AllocsPerRun(runs, f))
	}
	return least
}

// waitBudget is how long a test may wait for something that must happen:
// most of what is left before the test binary's deadline, up to 2 minutes
// (so one failure does not use up the binary's time), so that a loaded
// machine makes a test slower, never wrong.
func waitBudget(t *testing.T) time.Duration {
	if d, ok := t.Deadline(); ok {
		return min(2*time.Minute, max(time.Until(d)*9/10, time.Second))
	}
	return 2 * time.Minute
}

// eventually polls cond until it holds or d has passed.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// returnsWithin runs f and reports whether it returned within d.
func returnsWithin(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// poisonedHeaders are content-header property lists (flag word onwards)
// that other clients can put on the wire.
var poisonedHeaders = map[string]struct {
	props   []byte
	decodes bool // since timestamps are signed, this one is not poison any more
}{
	"timestamp 2^63 in a header table": {
		props: append([]byte{0x20, 0x00, 0, 0, 0, 11, 1, 't', 'T'}, 0x80, 0, 0, 0, 0, 0, 0, 0), decodes: true,
	},
	"timestamp property 2^63": {
		props: append([]byte{0x00, 0x40}, 0x80, 0, 0, 0, 0, 0, 0, 0), decodes: true,
	},
	"unknown type tag in a header table": {
		props: []byte{0x20, 0x00, 0, 0, 0, 3, 1, 'k', '?'},
	},
	"flag word announcing more than the header holds": {
		props: []byte{0x98, 0x00, 4, 'j', 's', 'o', 'n'}, // content-type, then headers and delivery-mode that are not there
	},
	"table length past the header's end": {
		props: []byte{0x20, 0x00, 0, 0, 1, 0, 1, 'k', 'V'},
	},
}

// rawContent encodes a method frame, a content header frame with the given
// raw property list, and one body frame, as another client's message would
// arrive.
func rawContent(t *testing.T, ch uint16, m amqp.Method, props, body []byte) []byte {
	t.Helper()
	b, err := amqp.AppendMethodFrame(nil, ch, m)
	require.NoError(t, err)
	payload := binary.BigEndian.AppendUint16(nil, 60) // class basic
	payload = binary.BigEndian.AppendUint16(payload, 0)
	payload = binary.BigEndian.AppendUint64(payload, uint64(len(body)))
	payload = append(payload, props...)
	b = append(b, byte(amqp.FrameHeader))
	b = binary.BigEndian.AppendUint16(b, ch)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(append(b, payload...), 0xCE)
	return amqp.AppendBodyFrames(b, ch, body, 4096)
}

type traceKey struct{}

// recordingTracer implements every tracer interface and records each call
// as a line; the contexts its start hooks return carry the line's number,
// so end hooks can show which start they belong to.
type recordingTracer struct {
	mu     sync.Mutex
	events []string
	seen   chan struct{} // gets a token per event
	header bool          // TracePublishStart adds a header
}

func newRecordingTracer() *recordingTracer {
	return &recordingTracer{seen: make(chan struct{}, 1000)}
}

func (r *recordingTracer) record(format string, args ...any) int {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	n := len(r.events)
	r.mu.Unlock()
	r.seen <- struct{}{}
	return n
}

func (r *recordingTracer) start(ctx context.Context, format string, args ...any) context.Context {
	return context.WithValue(ctx, traceKey{}, r.record(format, args...))
}

func startOf(ctx context.Context) any { return ctx.Value(traceKey{}) }

// waitFor waits until the tracer has recorded n events in all and returns them.
func (r *recordingTracer) waitFor(t *testing.T, n int) []string {
	t.Helper()
	for {
		r.mu.Lock()
		got := len(r.events)
		events := append([]string(nil), r.events...)
		r.mu.Unlock()
		if got >= n {
			return events
		}
		select {
		case <-r.seen:
		case <-t.Context().Done():
			t.Fatalf("waited for %d trace events, got %d: %q", n, got, events)
		}
	}
}

func (r *recordingTracer) reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

func (r *recordingTracer) TraceConnectStart(ctx context.Context, d amqp.TraceConnectStartData) context.Context {
	return r.start(ctx, "connect start %v %s", d.Addrs, d.Vhost)
}

func (r *recordingTracer) TraceConnectEnd(ctx context.Context, d amqp.TraceConnectEndData) {
	r.record("connect end of %v: conn %t err %t addr %q", startOf(ctx), d.Conn != nil, d.Err != nil, d.Addr)
}

func (r *recordingTracer) TracePublishStart(ctx context.Context, ch *amqp.Channel, d amqp.TracePublishStartData) context.Context {
	if r.header {
		h := maps.Clone(d.Msg.Headers)
		if h == nil {
			h = amqp.Table{}
		}
		h["x-trace"] = "t1"
		d.Msg.Headers = h
	}
	return r.start(ctx, "publish start ch%d %q %q", ch.ID(), d.Msg.Exchange, d.Msg.RoutingKey)
}

func (r *recordingTracer) TracePublishEnd(ctx context.Context, ch *amqp.Channel, d amqp.TracePublishEndData) {
	r.record("publish end of %v: %s %q tag %d err %v", startOf(ctx), d.Outcome, d.RoutingKey, d.DeliveryTag, d.Err != nil)
}

func (r *recordingTracer) TraceDeliveryStart(ctx context.Context, ch *amqp.Channel, d amqp.TraceDeliveryStartData) context.Context {
	return r.start(ctx, "delivery start ch%d tag %d", ch.ID(), d.Delivery.DeliveryTag)
}

func (r *recordingTracer) TraceDeliveryEnd(ctx context.Context, ch *amqp.Channel, d amqp.TraceDeliveryEndData) {
	r.record("delivery end of %v: tag %d %s multiple %t requeue %t", startOf(ctx), d.DeliveryTag, d.Outcome, d.Multiple, d.Requeue)
}

func (r *recordingTracer) TraceCallStart(ctx context.Context, ch *amqp.Channel, d amqp.TraceCallStartData) context.Context {
	return r.start(ctx, "call start %s", d.Method.MethodName())
}

func (r *recordingTracer) TraceCallEnd(ctx context.Context, ch *amqp.Channel, d amqp.TraceCallEndData) {
	reply := "<nil>"
	if d.Reply != nil {
		reply = d.Reply.MethodName()
	}
	r.record("call end of %v: %s reply %s err %v", startOf(ctx), d.Method.MethodName(), reply, d.Err != nil)
}

func (r *recordingTracer) TraceChannelError(ch *amqp.Channel, err *amqp.Error) {
	r.record("channel error ch%d %d", ch.ID(), err.Code)
}

func (r *recordingTracer) TraceRecovery(c *amqp.Connection, ev amqp.RecoveryEvent) {
	r.record("recovery %s", ev.Kind)
}

func (r *recordingTracer) TraceBlocked(c *amqp.Connection, b amqp.Blocking) {
	r.record("blocked %t %q", b.Active, b.Reason)
}

func (r *recordingTracer) TraceReturn(ch *amqp.Channel, ret amqp.Return) {
	r.record("return %d %q", ret.ReplyCode, ret.RoutingKey)
}

// recvWithin receives from c, failing the test if nothing comes within the
// test's wait budget (a hang guard, not a timing).
func recvWithin[T any](t *testing.T, c <-chan T, what string) (T, bool) {
	t.Helper()
	timer := time.NewTimer(waitBudget(t))
	defer timer.Stop()
	select {
	case v, ok := <-c:
		return v, ok
	case <-timer.C:
		t.Fatalf("waited too long for %s", what)
		var zero T
		return zero, false
	}
}
