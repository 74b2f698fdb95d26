// Package bench compares github.com/amqp-go/amqp ("amqp") with
// github.com/rabbitmq/amqp091-go ("amqp091") on the same scenarios. Each
// benchmark is named Benchmark<Scenario>/<client>[/<variant>]; see README.md.
//
// Scenarios that need a fake server run it in a child process (this test
// binary re-executed with BENCH_FAKE_SERVER set), so that getrusage in the
// parent counts the client's CPU time only. Broker scenarios talk to
// RabbitMQ at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/) and skip
// when nothing answers there.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envFakeServer selects the child-process mode: "sink", "source" or "rpc".
const envFakeServer = "BENCH_FAKE_SERVER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envFakeServer); mode != "" {
		os.Exit(runFakeServer(mode))
	}
	code := m.Run()
	stopChildren()
	os.Exit(code)
}

// child is a fake server running in a child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser // held open (and referenced, so no finalizer closes it): its EOF tells the child to exit
	addr  string
	err   error
}

var (
	childMu  sync.Mutex
	children = map[string]*child{}
)

// fakeServer returns the address of the child-process fake server for mode,
// starting it on first use. The children live until TestMain ends (they also
// exit when their stdin closes, so a killed parent leaves none behind).
func fakeServer(b *testing.B, mode string) string {
	b.Helper()
	childMu.Lock()
	defer childMu.Unlock()
	c := children[mode]
	if c == nil {
		c = startChild(mode)
		children[mode] = c
	}
	if c.err != nil {
		b.Fatalf("fake server %s: %v", mode, c.err)
	}
	return c.addr
}

func startChild(mode string) *child {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envFakeServer+"="+mode)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return &child{err: err}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return &child{err: err}
	}
	if err := cmd.Start(); err != nil {
		return &child{err: err}
	}
	c := &child{cmd: cmd, stdin: stdin}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		for s.Scan() { // keep draining so the child never blocks on stdout
		}
	}()
	select {
	case l, ok := <-line:
		if !ok || !strings.HasPrefix(l, "ADDR ") {
			c.err = fmt.Errorf("child printed %q instead of its address", l)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return c
		}
		c.addr = strings.TrimPrefix(l, "ADDR ")
	case <-time.After(10 * time.Second):
		c.err = fmt.Errorf("child did not print its address within 10s")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return c
}

func stopChildren() {
	childMu.Lock()
	defer childMu.Unlock()
	for mode, c := range children {
		if c.cmd != nil && c.cmd.Process != nil && c.err == nil {
			_ = c.stdin.Close()
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		delete(children, mode)
	}
}

// cpuNanos returns the user+system CPU time this process has used, and the
// system part of it.
func cpuNanos() (total, sys int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano(), ru.Stime.Nano()
}

// meter times the measured part of a benchmark: wall time through the
// testing package's timer, CPU time through getrusage.
type meter struct {
	b              *testing.B
	cpu0, sys0     int64
	wall0          time.Time
	reads0, write0 int64
}

// start resets the benchmark timer, the allocation counters and the CPU
// baseline: everything before it (dialing, declaring, pre-filling) is excluded.
func start(b *testing.B) *meter {
	b.ReportAllocs()
	b.ResetTimer()
	m := &meter{b: b, wall0: time.Now(), reads0: roundIO.reads.Load(), write0: roundIO.writes.Load()}
	m.cpu0, m.sys0 = cpuNanos()
	return m
}

// stop ends the measured part and reports cpu-ns/msg (the client's CPU time
// per message, user+system), sys-ns/msg (its system part), msgs/s, and the socket reads and writes per message of the
// connections dialed with dialOurs and dialIncumbent (or counted by the raw
// writer).
func (m *meter) stop() {
	cpu, sys := cpuNanos()
	wall := time.Since(m.wall0)
	m.b.StopTimer()
	n := float64(m.b.N)
	m.b.ReportMetric(float64(cpu-m.cpu0)/n, "cpu-ns/msg")
	m.b.ReportMetric(float64(sys-m.sys0)/n, "sys-ns/msg")
	m.b.ReportMetric(n/wall.Seconds(), "msgs/s")
	m.b.ReportMetric(float64(roundIO.reads.Load()-m.reads0)/n, "reads/msg")
	m.b.ReportMetric(float64(roundIO.writes.Load()-m.write0)/n, "writes/msg")
}

// benchCtx is a context that bounds one benchmark round, so that a stuck
// server fails the benchmark instead of hanging it.
func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// body returns a message body of n bytes.
func body(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}
