package amqp

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The per-delivery and per-confirm bookkeeping reuses its arrays: a window
// that empties after each message must not allocate for the next one.
func TestTagWindowReusesItsArray(t *testing.T) {
	var w tagWindow
	tag := uint64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		tag++
		w.received(tag, false)
		require.NoError(t, w.settle(tag, false))
	})
	require.Zero(t, allocs)
}
