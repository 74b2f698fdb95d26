package conformance

import (
	"context"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden verdicts from this run")

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

const golden = "testdata/rabbitmq-3.10.golden"

// The whole suite against the test broker (RabbitMQ 3.10.8 here): its
// verdicts are pinned in a golden file, so a change in the suite or the
// broker shows up as a diff, and they must agree with RabbitMQ's own
// compatibility page except where disagreements explains why not.
func TestRabbitMQVerdictsMatchGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, Options{URL: brokerURL()})
	require.NoError(t, err)
	t.Logf("%s: %d rules in %s", rep.Broker, len(rep.Results), time.Since(start).Round(time.Millisecond))
	if !strings.HasPrefix(rep.Broker, "RabbitMQ 3.10.") {
		msg := "the golden verdicts are RabbitMQ 3.10's; the broker at " + brokerURL() + " is " + rep.Broker
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	got := rep.Verdicts()
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	if got != string(want) {
		var b strings.Builder
		rep.WriteTable(&b)
		t.Logf("the run:\n%s", b.String())
	}
	require.Equal(t, string(want), got, "verdicts changed: if the change is right, run go test ./conformance -run TestRabbitMQVerdictsMatchGolden -update")

	// Agreement with the broker's own account.
	var unexplained, stale []string
	for _, res := range rep.Results {
		status := rabbitmqStatus[res.Rule.ID].Status
		conforming := status == "ok" || status == "does"
		disagree := status != "" &&
			((res.Verdict == Fail && conforming) || (res.Verdict == Pass && !conforming && res.Rule.Level != "MAY"))
		_, explained := disagreements[res.Rule.ID]
		switch {
		case disagree && !explained:
			unexplained = append(unexplained, res.Rule.ID+": "+string(res.Verdict)+" where the page says "+status+": "+res.Detail)
		case !disagree && explained:
			stale = append(stale, res.Rule.ID)
		}
	}
	require.Empty(t, unexplained, "verdicts that part ways with RabbitMQ's page without an explanation in disagreements")
	require.Empty(t, stale, "explanations in disagreements for rules where verdict and page agree")
}

// Checks delete what they declare: after a run of checks that declare
// queues and exchanges (named, server-named, with odd names), none is left.
func TestChecksCleanUpAfterThemselves(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{URL: brokerURL(), Run: regexp.MustCompile(
		`^(queue\.bind/unique|exchange\.bind/unique|queue\.declare\.queue/syntax|exchange\.declare\.exchange/syntax|confirm/all queues|exchange\.declare/minimum)$`)})
	require.NoError(t, err)
	if strings.HasPrefix(rep.Broker, "unreachable") {
		t.Skip(rep.Broker)
	}
	s, err := amqpraw.DialURL(ctx, brokerURL())
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Handshake(ctx, amqpraw.Handshake{}))
	require.NoError(t, s.OpenChannel(ctx, 1))
	var names int
	for _, res := range rep.Results {
		require.NotEmpty(t, res.Declared, res.Rule.ID)
		for _, name := range res.Declared {
			names++
			for _, m := range []amqp.Method{&amqp.QueueDeclare{Queue: name, Passive: true}, &amqp.ExchangeDeclare{Exchange: name, Passive: true}} {
				require.NoError(t, s.Send(ctx, 1, m))
				_, err := s.ExpectChannelClose(ctx, 1, amqp.CodeNotFound)
				require.NoError(t, err, "%s: %s %q is still there", res.Rule.ID, m.MethodName(), name)
				require.NoError(t, s.OpenChannel(ctx, 1))
			}
		}
	}
	t.Logf("%d checks declared %d names, none left", len(rep.Results), names)
}
