package amqp

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfirmTrackerReusesItsArray(t *testing.T) {
	tr := confirmTracker{active: true, nextSeq: 1, base: 1}
	tr.block = make([]Confirmation, 1<<14) // the Confirmations' own blocks are not what is measured
	allocs := testing.AllocsPerRun(1000, func() {
		c := tr.add(nil)
		tr.resolve(c.seq, false, serverAck)
	})
	require.Zero(t, allocs)
}
