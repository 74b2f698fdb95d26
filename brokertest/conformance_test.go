package brokertest_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/amqp-go/amqp/conformance"
	"github.com/stretchr/testify/require"
)

// TestConformanceRulesThatRestartOrBlockTheBroker runs the conformance
// checks the shared broker on 5672 must never see: the ones that restart
// the broker (durable queues, durable bindings, persistent messages) and the
// ones that raise a memory alarm (connection.blocked, overflow), against
// this package's own node.
func TestConformanceRulesThatRestartOrBlockTheBroker(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	// The alarm is global to the node: always lift it, even if the test fails.
	t.Cleanup(func() {
		if _, err := node.Ctl("set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("lifting the memory alarm: %v", err)
		}
	})
	rules := []string{
		"queue.declare.durable/persistence", "queue.bind/durable-exchange", "basic/01",
		"basic/02", "basic/03", "ext.connection.blocked/alarm",
	}
	var quoted []string
	for _, r := range rules {
		quoted = append(quoted, regexp.QuoteMeta(r))
	}
	rep, err := conformance.Run(ctxFor(t, 5*time.Minute), conformance.Options{
		URL:     node.URL(),
		Run:     regexp.MustCompile("^(" + strings.Join(quoted, "|") + ")$"),
		Timeout: 4 * time.Minute,
		Restart: func(context.Context) error {
			if err := node.StopApp(); err != nil {
				return err
			}
			return node.StartApp()
		},
		RaiseAlarm: func(context.Context) error {
			_, err := node.Ctl("set_vm_memory_high_watermark", "0.0000001")
			return err
		},
		ClearAlarm: func(context.Context) error {
			_, err := node.Ctl("set_vm_memory_high_watermark", "0.4")
			return err
		},
	})
	require.NoError(t, err)
	var b strings.Builder
	require.NoError(t, rep.WriteTable(&b))
	t.Log("\n" + b.String())
	for _, res := range rep.Results {
		t.Logf("%s: %s", res.Rule.ID, res.Duration.Round(time.Millisecond))
	}
	require.Len(t, rep.Results, len(rules))
	for _, res := range rep.Results {
		require.Equal(t, conformance.Pass, res.Verdict, "%s: %s\n%s", res.Rule.ID, res.Detail, strings.Join(res.Transcript, "\n"))
	}
}
