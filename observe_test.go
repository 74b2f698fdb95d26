package amqp_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Fake-server tests of Config.Logger: what is logged, at which level, and
// what never is.

// logCapture is a JSON slog handler's output, safe to read while written.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records returns "LEVEL msg" per record.
func (l *logCapture) records(t *testing.T) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(l.String()) {
		var rec struct{ Level, Msg string }
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		out = append(out, rec.Level+" "+rec.Msg)
	}
	return out
}

// waitRecords waits until n records were logged.
func (l *logCapture) waitRecords(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(waitBudget(t))
	for {
		recs := l.records(t)
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoggerRecordsTheConnectionsLife(t *testing.T) {
	ctx := t.Context()
	var logs logCapture
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Logger: logs.logger(), Username: "u", Password: "hunter2-secret"})
	ch := openFakeChannel(t, conn, sc)

	require.NoError(t, sc.Send(ctx, 0, &amqp.ConnectionBlocked{Reason: "low on memory"}))
	require.NoError(t, sc.Send(ctx, 0, &amqp.ConnectionUnblocked{}))
	require.NoError(t, sc.CloseChannel(ctx, ch.ID(), 404, "NOT_FOUND - no queue 'q'", nil))
	amqptest.Expect[*amqp.ChannelOpen](t, sc)
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.ChannelOpenOk{}))

	// A message carrying a body that must never reach the log; its header is malformed.
	cons := consumeOnFake(t, ch, sc, amqp.ConsumerOptions{})
	props := []byte{0x20, 0x00, 0, 0, 0, 3, 1, 'k', '?'}
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, ch.ID(), &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, RoutingKey: "rk"}, props, []byte("body-must-not-be-logged"))))
	_, err := cons.Next(ctx)
	require.ErrorIs(t, err, amqp.ErrMalformedContent)

	sc.Drop() // the server is gone: the connection ends lost
	<-conn.Done()
	require.ErrorIs(t, conn.Err(), amqp.ErrConnectionLost)

	// What the reader notices is logged on the callback goroutine, the
	// malformed message on the one that took it: no order between the two.
	recs := logs.waitRecords(t, 6)
	require.Equal(t, "INFO amqp: connection opened", recs[0])
	require.ElementsMatch(t, []string{
		"WARN amqp: connection blocked by the server",
		"INFO amqp: connection unblocked",
		"WARN amqp: channel closed by the server",
		"WARN amqp: malformed message handed out",
		"ERROR amqp: connection lost",
	}, recs[1:])
	out := logs.String()
	require.Contains(t, out, `"reason":"low on memory"`)
	require.Contains(t, out, `"code":404`)
	require.Contains(t, out, `"routing_key":"rk"`)
	require.NotContains(t, out, "hunter2-secret")
	require.NotContains(t, out, "body-must-not-be-logged")
}

func TestLoggerRecordsCloseAtInfo(t *testing.T) {
	var logs logCapture
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Logger: logs.logger()})
	go func() {
		amqptest.Expect[*amqp.ConnectionClose](t, sc)
		sc.Send(t.Context(), 0, &amqp.ConnectionCloseOk{})
	}()
	require.NoError(t, conn.Close(t.Context()))
	require.Equal(t, []string{"INFO amqp: connection opened", "INFO amqp: connection closed"}, logs.waitRecords(t, 2))
}

func TestLoggerAndTracerSeeRecovery(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	var logs logCapture
	rec := newRecordingTracer()
	cfg := recoveringConfig(b, amqp.RecoveryConfig{})
	cfg.Logger, cfg.Tracer = logs.logger(), rec
	conn, err := amqp.DialConfig(t.Context(), cfg)
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)

	var recovery []string
	for _, e := range rec.waitFor(t, 4) {
		if strings.HasPrefix(e, "recovery ") {
			recovery = append(recovery, e)
		}
	}
	require.Equal(t, []string{"recovery started", "recovery succeeded"}, recovery)
	recs := logs.waitRecords(t, 3)
	require.Equal(t, []string{"INFO amqp: connection opened", "WARN amqp: recovery started", "INFO amqp: recovery succeeded"}, recs[:3])
}

func TestLoggerRecordsDeliveriesDroppedWithTheirChannel(t *testing.T) {
	ctx := t.Context()
	var logs logCapture
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Logger: logs.logger()})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeOnFake(t, ch, sc, amqp.ConsumerOptions{})
	require.NoError(t, sc.Deliver(ctx, ch.ID(), "c", 2, amqp.Properties{}, []byte("unread")))
	require.NoError(t, sc.CloseChannel(ctx, ch.ID(), 406, "PRECONDITION_FAILED", nil))
	<-cons.Done()

	recs := logs.waitRecords(t, 3)
	require.Contains(t, recs, "INFO amqp: buffered deliveries dropped; the server requeues them")
	require.Contains(t, logs.String(), `"count":2`)
	require.NotContains(t, logs.String(), "unread")
}

func TestConfigShowsTracerAndLoggerWithoutTheirInsides(t *testing.T) {
	var logs logCapture
	cfg := amqp.Config{Tracer: newRecordingTracer(), Logger: logs.logger()}
	require.Contains(t, cfg.String(), "Tracer:*amqp_test.recordingTracer")
	require.Contains(t, cfg.String(), "Logger:set")
	logs.logger().Info("config", "cfg", cfg)
	require.Contains(t, logs.String(), `"tracer":"*amqp_test.recordingTracer"`)
	require.Contains(t, logs.String(), `"logger":true`)
}
