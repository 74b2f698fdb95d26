package layer_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// A Python peer: one real Django Channels layer (asgi_rabbitmq 0.5.5 or
// channels_rabbitmq) in a process of its own, driven by JSON lines
// (../shared/interop/django-channels/README.md gives the protocol).

// peerDir finds the peer: $DJANGO_PEER_DIR, or ../../shared/interop/django-channels
// from this package (CI has ../shared beside the repository).
func peerDir() string {
	if d := os.Getenv("DJANGO_PEER_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "shared", "interop", "django-channels")
}

// peerPython is Debian's python3, for which scripts/ensure-django-peer.sh
// installs the packages the peer needs ($DJANGO_PEER_PYTHON overrides it).
func peerPython() (string, error) {
	if p := os.Getenv("DJANGO_PEER_PYTHON"); p != "" {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3", nil
	}
	return exec.LookPath("python3")
}

type peer struct {
	t      testing.TB
	name   string
	stdin  io.WriteCloser
	lines  chan []byte
	cmd    *exec.Cmd
	stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.b.String()
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// startPeer starts a peer of the given Python layer with its CONFIG as
// keyword arguments, or skips the test, saying why, when python3, the peer
// or the Debian packages it needs are missing.
func startPeer(t testing.TB, pyLayer string, config map[string]any) *peer {
	t.Helper()
	needBroker(t)
	dir := peerDir()
	if _, err := os.Stat(filepath.Join(dir, "peer.py")); err != nil {
		t.Skipf("the Django Channels peer is missing (%v): set DJANGO_PEER_DIR, or put ../shared beside the repository", err)
	}
	py, err := peerPython()
	if err != nil {
		t.Skipf("no python3 to run the Django Channels peer: %v", err)
	}
	cfg, err := json.Marshal(config)
	require.NoError(t, err)
	cmd := exec.Command(py, "-B", filepath.Join(dir, "peer.py"), "--layer", pyLayer, "--url", brokerURL(), "--config", string(cfg))
	p := &peer{t: t, name: pyLayer, cmd: cmd, stderr: &syncBuffer{}, lines: make(chan []byte, 16)}
	cmd.Stderr = p.stderr
	p.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		p.stdin.Close() // stdin EOF ends the peer
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if strings.Contains(p.stderr.String(), "Traceback") {
			t.Logf("%s peer stderr:\n%s", pyLayer, p.stderr)
		}
	})
	r, err := p.try(map[string]any{"op": "info"}, 30*time.Second)
	if err != nil {
		if strings.Contains(p.stderr.String(), "ImportError") || strings.Contains(p.stderr.String(), "ModuleNotFoundError") {
			msg := fmt.Sprintf("the Django Channels peer cannot import its Debian packages (run scripts/ensure-django-peer.sh): %s", p.stderr)
			if os.Getenv("CI") != "" {
				// scripts/test.sh installs them before these tests: a CI
				// run without them would go green with no cross-talk tested.
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		t.Fatalf("starting the %s peer: %v", pyLayer, err)
	}
	require.Equal(t, true, r["ok"], "info: %v", r)
	return p
}

// in returns the peer bound to test t, whose failures its calls report.
func (p *peer) in(t testing.TB) *peer {
	c := *p
	c.t = t
	return &c
}

// try sends one command and waits for its reply.
func (p *peer) try(cmd map[string]any, wait time.Duration) (map[string]any, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("writing to the peer: %w (stderr: %s)", err, p.stderr)
	}
	select {
	case line, ok := <-p.lines:
		if !ok {
			return nil, fmt.Errorf("the peer exited: %v; stderr: %s", p.cmd.Wait(), p.stderr)
		}
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("peer reply %q: %w", line, err)
		}
		return r, nil
	case <-time.After(wait):
		return nil, fmt.Errorf("no reply to %s in %v; stderr: %s", b, wait, p.stderr)
	}
}

// do sends a command and returns the reply, failing the test if there is
// none; the reply may be an error ("ok": false).
func (p *peer) do(cmd map[string]any) map[string]any {
	p.t.Helper()
	r, err := p.try(cmd, 60*time.Second)
	require.NoError(p.t, err)
	return r
}

// ok is do for a command that must succeed.
func (p *peer) ok(cmd map[string]any) map[string]any {
	p.t.Helper()
	r := p.do(cmd)
	require.Equal(p.t, true, r["ok"], "%s peer: %v -> %v", p.name, cmd, r)
	return r
}

// receive receives on the peer; it returns the channel and the message, or
// the error the peer gave ("Timeout" when nothing came).
func (p *peer) receive(channel string, timeout time.Duration) (string, map[string]any, string) {
	p.t.Helper()
	r := p.do(map[string]any{"op": "receive", "channel": channel, "timeout": timeout.Seconds()})
	if r["ok"] != true {
		e, _ := r["error"].(string)
		return "", nil, e
	}
	ch, _ := r["channel"].(string)
	m, _ := r["message"].(map[string]any)
	return ch, m, ""
}

// pyBytes is how the peer's JSON carries a bytes value.
func pyBytes(b []byte) map[string]any {
	return map[string]any{"$bytes": base64.StdEncoding.EncodeToString(b)}
}

// runID makes names no other run uses (the Python layers' names are not
// namespaced).
func runID(t testing.TB) string {
	return fmt.Sprintf("go%x", time.Now().UnixNano()%(1<<36))
}

// eventually retries f until it reports success or the time is up.
func eventually(ctx context.Context, every time.Duration, f func() bool) bool {
	for {
		if f() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}

// bothReceive checks that a message with the given text reached the Go
// layer's channel goCh and the peer's channel pyCh.
func bothReceive(t *testing.T, l *layer.Layer, goCh string, p *peer, pyCh, text string) {
	t.Helper()
	_, m, e := p.in(t).receive(pyCh, 10*time.Second)
	require.Empty(t, e)
	require.Equal(t, pyMessage(text), m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, gm, err := l.Receive(ctx, goCh)
	require.NoError(t, err)
	require.Equal(t, goMessage(text), gm)
}
