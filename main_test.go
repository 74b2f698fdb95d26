package amqp_test

import (
	"flag"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests: every
// connection's reader, writer and callback goroutines and its heartbeat timer must end
// with it.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		// The fuzzing engine's own goroutines may still be winding down.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
