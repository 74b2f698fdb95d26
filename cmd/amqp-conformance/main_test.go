package main

import (
	"bytes"
	"encoding/xml"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func TestCommandPrintsTableAndWritesJUnit(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: -short")
	}
	junit := filepath.Join(t.TempDir(), "report.xml")
	var out, errOut bytes.Buffer
	code := run([]string{"-url", brokerURL(), "-run", `^(queue\.declare\.passive/passive|exchange\.delete\.exchange/exists|basic/01)$`, "-junit", junit}, &out, &errOut)
	require.Equal(t, 0, code, "stderr: %s\n%s", errOut.String(), out.String())
	require.Regexp(t, `(?m)^PASS\s+MAY\s+queue\.declare\.passive/passive`, out.String())
	require.Regexp(t, `(?m)^DEVIATION\s+MUST\s+exchange\.delete\.exchange/exists`, out.String())
	require.Regexp(t, `(?m)^SKIP\s+SHOULD\s+basic/01\s+needs a broker restart`, out.String())
	require.Regexp(t, `(?m)^total\s+1\s+0\s+1\s+1$`, out.String())
	b, err := os.ReadFile(junit)
	require.NoError(t, err)
	require.NoError(t, xml.Unmarshal(b, new(struct{})))
	require.Contains(t, string(b), "deviation documented by the broker")
}

func TestCommandFailsWithoutABroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	var out, errOut bytes.Buffer
	code := run([]string{"-url", "amqp://guest:guest@" + addr + "/", "-run", `^frame/end-octet$`, "-verdicts"}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Equal(t, "FAIL      frame/end-octet", strings.TrimSpace(out.String()))
}

func TestCommandRejectsABadRegexp(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 2, run([]string{"-run", "("}, &out, &errOut))
	require.Contains(t, errOut.String(), "-run")
}

// -restart-cmd is what the restart rules call; here one that fails, so the
// shared broker is never restarted.
func TestCommandRunsTheRestartCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: -short")
	}
	var out, errOut bytes.Buffer
	code := run([]string{"-url", brokerURL(), "-run", `^basic/01$`, "-verdicts", "-restart-cmd", "echo asked to restart >&2; exit 3"}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Equal(t, "FAIL      basic/01", strings.TrimSpace(out.String()))
	require.Contains(t, errOut.String(), "asked to restart")
}

// -vhost replaces the URL's virtual host: one that does not exist makes the
// check fail at connection.open.
func TestCommandVhostReplacesTheURLs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: -short")
	}
	var out, errOut bytes.Buffer
	code := run([]string{"-url", brokerURL(), "-vhost", "amqp-conformance-no-such-vhost", "-run", `^queue\.declare\.passive/passive$`}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Contains(t, out.String(), "(vhost amqp-conformance-no-such-vhost)")
	require.Regexp(t, `(?m)^FAIL\s+MAY\s+queue\.declare\.passive/passive\s+cannot open a connection: opening vhost "amqp-conformance-no-such-vhost"`, out.String())
}
