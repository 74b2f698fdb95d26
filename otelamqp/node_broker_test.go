package otelamqp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Cross-language trace check against the real broker: a Node.js peer using
// amqplib with @opentelemetry/instrumentation-amqplib publishes to and
// consumes from the same queue as this client, and each side's span must
// continue the other's trace. Skipped without node and npm, or when the
// npm packages cannot be installed (offline).

// nodePackages are the peer's npm packages, pinned: @opentelemetry/api 1.9
// because sdk-trace-base 2.x requires below 1.10.
var nodePackages = []string{
	"amqplib@0.10.9",
	"@opentelemetry/api@1.9.1",
	"@opentelemetry/sdk-trace-base@2.12.1",
	"@opentelemetry/sdk-trace-node@2.12.1",
	"@opentelemetry/instrumentation-amqplib@0.70.0",
}

// nodePeer returns the directory holding peer.js and its node_modules. The
// packages are installed once into the user's cache directory (a folder
// named for the pinned versions), so reruns take no time.
func nodePeer(t *testing.T) string {
	t.Helper()
	_, errNode := exec.LookPath("node")
	_, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.Skip("node and npm are needed for the cross-language trace check")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "amqp-go-otelamqp", "node-"+strings.NewReplacer("@", "", "/", "-").Replace(strings.Join(nodePackages, "+")))
	if _, err := os.Stat(filepath.Join(dir, "installed")); err != nil {
		// Installed beside its final place and renamed, so a run cut short
		// never leaves a half-installed folder that looks complete.
		require.NoError(t, os.MkdirAll(filepath.Dir(dir), 0o755))
		tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
		require.NoError(t, err)
		defer os.RemoveAll(tmp)
		// Bounded: a registry that drops packets must cost a skip, not the
		// package's whole timeout (npm's own defaults wait 5 minutes a fetch).
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		args := append([]string{"install", "--prefix", tmp, "--no-audit", "--no-fund", "--loglevel=error",
			"--fetch-timeout=30000", "--fetch-retries=1"}, nodePackages...)
		cmd := exec.CommandContext(ctx, "npm", args...)
		cmd.WaitDelay = 5 * time.Second // npm's children may hold the pipe open past the kill
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Skipf("npm install failed (offline?): %v\n%s", err, out)
		}
		require.NoError(t, os.WriteFile(filepath.Join(tmp, "installed"), nil, 0o644))
		if err := os.Rename(tmp, dir); err != nil && !os.IsExist(err) {
			if _, statErr := os.Stat(filepath.Join(dir, "installed")); statErr != nil { // not a concurrent run's install
				require.NoError(t, err)
			}
		}
	}
	script, err := os.ReadFile("testdata/peer.js")
	require.NoError(t, err)
	peer := filepath.Join(dir, "peer.js")
	if old, err := os.ReadFile(peer); err != nil || !bytes.Equal(old, script) {
		require.NoError(t, os.WriteFile(peer, script, 0o644))
	}
	return dir
}

// nodeSpan is a span the Node peer reports.
type nodeSpan struct {
	Name         string   `json:"name"`
	Kind         int      `json:"kind"` // @opentelemetry/api SpanKind: 3 producer, 4 consumer
	TraceID      string   `json:"traceId"`
	SpanID       string   `json:"spanId"`
	ParentSpanID string   `json:"parentSpanId"`
	Links        []string `json:"links"`
}

const (
	nodeProducer = 3
	nodeConsumer = 4
)

// runPeer runs the Node peer and returns its span of the given kind.
func runPeer(t *testing.T, dir, mode, queue string, kind int) nodeSpan {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "peer.js"), mode, brokerURL(), queue)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "node peer %s: %s", mode, stderr.String())
	var spans []nodeSpan
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var s nodeSpan
		require.NoError(t, json.Unmarshal(sc.Bytes(), &s), "%s", sc.Text())
		if s.Kind == kind {
			spans = append(spans, s)
		}
	}
	require.Len(t, spans, 1, "the node peer's spans: %s", out)
	return spans[0]
}

func TestTraceCrossesToAndFromNodeAmqplib(t *testing.T) {
	needBroker(t)
	dir := nodePeer(t)
	ctx := t.Context()
	tl := newTelemetry(t, sdktrace.AlwaysSample())
	conn := tl.dial(t)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	queue := uniqueName("otel-node")
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: queue}) // not exclusive: the peer uses it too
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ch.QueueDelete(ctx, amqp.QueueDelete{Queue: queue})
	})

	t.Run("node publishes, we consume", func(t *testing.T) {
		producer := runPeer(t, dir, "publish", queue, nodeProducer)
		var d *amqp.Delivery
		for d == nil { // the peer's message may take a moment to be routed
			d, err = ch.Get(ctx, amqp.BasicGet{Queue: queue})
			if err == amqp.ErrEmpty {
				d = nil
				time.Sleep(10 * time.Millisecond)
				continue
			}
			require.NoError(t, err)
		}
		require.Equal(t, "from node", string(d.Body))
		require.NoError(t, d.Ack(amqp.AckOptions{}))
		proc := tl.waitSpans(t, "process", 1)[0]
		require.Equal(t, producer.TraceID, proc.SpanContext().TraceID().String(), "the same trace")
		require.Equal(t, producer.SpanID, proc.Parent().SpanID().String(), "the node producer span is the parent")
		require.Len(t, proc.Links(), 1)
		require.Equal(t, producer.SpanID, proc.Links()[0].SpanContext.SpanID().String(), "and a link")
	})

	t.Run("we publish, node consumes", func(t *testing.T) {
		_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: queue, Body: []byte("from go")})
		require.NoError(t, err)
		pub := tl.waitSpans(t, "publish", 1)[0]
		consumer := runPeer(t, dir, "consume", queue, nodeConsumer)
		require.Equal(t, pub.SpanContext().TraceID().String(), consumer.TraceID, "the same trace")
		require.Equal(t, pub.SpanContext().SpanID().String(), consumer.ParentSpanID, "our producer span is the node consumer's parent")
	})
}
