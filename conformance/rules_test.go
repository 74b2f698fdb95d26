package conformance

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRuleIDsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range AllRules() {
		require.False(t, seen[r.ID], "rule %s twice", r.ID)
		seen[r.ID] = true
		require.Contains(t, []string{"MUST", "SHOULD", "MAY"}, r.Level, r.ID)
	}
	require.Len(t, SpecRules(), 139)
}

// Every rule has a check or a reason for having none, never both; and the
// tables that name rules name real ones.
func TestEveryRuleIsCheckedOrExplained(t *testing.T) {
	known := map[string]bool{}
	for _, r := range AllRules() {
		known[r.ID] = true
		_, hasCheck := registry[r.ID]
		reason, hasReason := unchecked[r.ID]
		require.True(t, hasCheck != hasReason, "rule %s: a check (%t) or a reason (%t), exactly one", r.ID, hasCheck, hasReason)
		if hasReason {
			require.NotEmpty(t, reason, r.ID)
		}
	}
	for id := range registry {
		require.True(t, known[id], "check for unknown rule %s", id)
	}
	for id := range unchecked {
		require.True(t, known[id], "reason for unknown rule %s", id)
	}
	for id := range rabbitmqStatus {
		require.True(t, known[id], "RabbitMQ status for unknown rule %s", id)
	}
	for id := range disagreements {
		require.True(t, known[id], "disagreement on unknown rule %s", id)
	}
}

// The goal: at least 90 of the 98 rules with a test scenario are
// checked. This pins which ones are not, so the list in the docs stays true.
func TestScenarioRulesWithoutACheck(t *testing.T) {
	var scenarios, checked int
	var missing, needHook []string
	for _, r := range SpecRules() {
		if r.Scenario == "" {
			continue
		}
		scenarios++
		c, ok := registry[r.ID]
		switch {
		case !ok:
			missing = append(missing, r.ID)
		case c.needs != needsNothing:
			needHook = append(needHook, r.ID)
			checked++
		default:
			checked++
		}
	}
	require.Equal(t, 98, scenarios)
	require.GreaterOrEqual(t, checked, 90)
	slices.Sort(missing)
	require.Equal(t, []string{
		"basic.nack/03", "basic.nack/04", "basic.reject/03", "connection.start/client-support",
	}, missing, "scenario rules without a check: all four are rules for clients")
	slices.Sort(needHook)
	require.Equal(t, []string{
		"basic/01", "basic/02", "basic/03", "queue.bind/durable-exchange", "queue.declare.durable/persistence",
	}, needHook, "scenario rules checked only against a broker the suite may restart or block")
}

// Every frame-level rule of the general part has a check.
func TestEveryGeneralRuleIsChecked(t *testing.T) {
	for _, r := range generalRules {
		require.Contains(t, registry, r.ID)
	}
}
