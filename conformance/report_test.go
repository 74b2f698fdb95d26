package conformance

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sampleReport() *Report {
	rules := AllRules()
	find := func(id string) Rule {
		for _, r := range rules {
			if r.ID == id {
				return r
			}
		}
		panic(id)
	}
	return &Report{Broker: "RabbitMQ 3.10.8", URL: redact("amqp://guest:secret@localhost/"), Vhost: "/", Duration: time.Second, Results: []Result{
		{Rule: find("queue.declare.passive/passive"), Verdict: Pass, Detail: "404"},
		{Rule: find("exchange.declare.type/typed"), Verdict: Fail, Detail: "406 instead", Transcript: []string{"← ch1 channel.close 406"}},
		{Rule: find("exchange.delete.exchange/exists"), Verdict: Deviation, Detail: "delete-ok", Note: "idempotent"},
		{Rule: find("basic/01"), Verdict: Skip, Detail: "needs a restart"},
		{Rule: find("ext.e2e/routing"), Verdict: Pass, Detail: "routed"},
	}}
}

func TestReportTableHasTotalsPerClassAndLevel(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, sampleReport().WriteTable(&b))
	out := b.String()
	require.NotContains(t, out, "secret")
	require.Contains(t, out, "ext.e2e/routing (extension)")
	require.Contains(t, out, "[documented by the broker: idempotent]")
	require.Regexp(t, `(?m)^exchange\s+0\s+1\s+1\s+0$`, out)
	require.Regexp(t, `(?m)^MUST\s+1\s+1\s+1\s+0$`, out)
	require.Regexp(t, `(?m)^total\s+2\s+1\s+1\s+1$`, out)
}

func TestReportJSONAndJUnit(t *testing.T) {
	rep := sampleReport()
	var b bytes.Buffer
	require.NoError(t, rep.WriteJSON(&b))
	var back Report
	require.NoError(t, json.Unmarshal(b.Bytes(), &back))
	require.Equal(t, rep.Results[1].Detail, back.Results[1].Detail)

	b.Reset()
	require.NoError(t, rep.WriteJUnit(&b))
	var suites struct {
		Suites []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Skipped  int    `xml:"skipped,attr"`
		} `xml:"testsuite"`
	}
	require.NoError(t, xml.Unmarshal(b.Bytes(), &suites))
	byName := map[string][3]int{}
	for _, s := range suites.Suites {
		byName[s.Name] = [3]int{s.Tests, s.Failures, s.Skipped}
	}
	require.Equal(t, [3]int{2, 1, 1}, byName["exchange"])
	require.Equal(t, [3]int{1, 0, 1}, byName["basic"])
	require.True(t, strings.Contains(b.String(), "deviation documented by the broker: idempotent"))
}

func TestVerdictsAreSortedByRule(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(sampleReport().Verdicts()), "\n")
	require.Equal(t, "SKIP      basic/01", lines[0])
	require.Equal(t, "PASS      queue.declare.passive/passive", lines[len(lines)-1])
}
