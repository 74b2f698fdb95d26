package conformance

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// No check passes without a broker: against an address where nothing
// listens, and against one that accepts connections but never says a word,
// every check fails or is skipped.
func TestNoPassWithoutABroker(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.Addr().String()
	dead.Close()

	for name, addr := range map[string]string{"dead": deadAddr, "silent": silent.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			rep, err := Run(t.Context(), Options{
				URL:          "amqp://guest:guest@" + addr + "/",
				ReplyTimeout: 100 * time.Millisecond,
				CheckTimeout: time.Second,
				Parallel:     32,
			})
			require.NoError(t, err)
			require.Len(t, rep.Results, len(AllRules()))
			require.Zero(t, rep.Count(Pass), "%s", rep.Verdicts())
			require.Zero(t, rep.Count(Deviation))
			for _, res := range rep.Results {
				if _, checked := registry[res.Rule.ID]; checked && res.Verdict == Skip {
					require.Contains(t, []need{needsRestart, needsAlarm}, registry[res.Rule.ID].needs, "%s skipped: %s", res.Rule.ID, res.Detail)
				}
			}
		})
	}
}

// A check that says PASS without a frame from the broker is turned into a
// FAIL by the runner.
func TestPassWithoutAFrameIsAFail(t *testing.T) {
	r := &runner{opts: Options{ReplyTimeout: time.Second}}
	r.opts.defaults()
	t.Cleanup(func() {
		registryMu.Lock()
		delete(registry, "test/lazy")
		registryMu.Unlock()
	})
	register("test/lazy", func(t *T) { t.Pass("nothing to see") })
	res := r.runOne(context.Background(), &Rule{ID: "test/lazy", Level: "MUST"})
	require.Equal(t, Fail, res.Verdict)
	require.Contains(t, res.Detail, "without a frame from the broker")
}
