package amqp

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The protocol-error streak of shouldRecover, link by link: only the same
// kind of error, at once after the link became usable, counts as a repeat.
func TestProtocolErrorRepeatsCountOnlyTheSameKindAtOnce(t *testing.T) {
	newConn := func() *Connection {
		c := &Connection{cfg: Config{Recovery: &RecoveryConfig{ProtocolErrorRepeats: 2}}, closeCalled: make(chan struct{})}
		c.rec.init()
		return c
	}
	malformed := func(detail string) error {
		return &peerProtocolError{err: fmt.Errorf("%w: %s (sent connection.close 502 SYNTAX_ERROR)", ErrMalformedFrame, detail)}
	}
	restoring := func() *link { return &link{} } // usable 0: the restore runs
	usableSince := func(ago time.Duration) *link {
		l := &link{}
		l.usable.Store(time.Now().Add(-ago).UnixNano())
		return l
	}

	t.Run("same kind at once gives up at the limit", func(t *testing.T) {
		c := newConn()
		require.True(t, c.shouldRecover(usableSince(time.Hour), malformed("offset 3")), "the first loss")
		require.True(t, c.shouldRecover(restoring(), malformed("offset 9")), "repeat 1: details differ, kind is the same")
		require.False(t, c.shouldRecover(usableSince(time.Second), malformed("offset 3")), "repeat 2 reaches the limit")
	})
	t.Run("not at once starts afresh", func(t *testing.T) {
		c := newConn()
		require.True(t, c.shouldRecover(usableSince(time.Hour), malformed("a")))
		require.True(t, c.shouldRecover(restoring(), malformed("a")))
		require.True(t, c.shouldRecover(usableSince(protocolRepeatWindow+time.Second), malformed("a")), "came back after the window")
		require.True(t, c.shouldRecover(restoring(), malformed("a")))
		require.False(t, c.shouldRecover(restoring(), malformed("a")))
	})
	t.Run("another kind or another loss starts afresh", func(t *testing.T) {
		c := newConn()
		require.True(t, c.shouldRecover(usableSince(time.Hour), malformed("a")))
		require.True(t, c.shouldRecover(restoring(), malformed("a")))
		require.True(t, c.shouldRecover(restoring(), &peerProtocolError{err: fmt.Errorf("%w: class 99", ErrUnknownMethod)}))
		require.True(t, c.shouldRecover(restoring(), malformed("a")))
		require.True(t, c.shouldRecover(restoring(), fmt.Errorf("%w: read: EOF", ErrConnectionLost)))
		require.True(t, c.shouldRecover(restoring(), malformed("a")))
		require.True(t, c.shouldRecover(restoring(), malformed("a")))
		require.False(t, c.shouldRecover(restoring(), malformed("a")))
	})
	t.Run("no limit", func(t *testing.T) {
		c := newConn()
		c.cfg.Recovery.ProtocolErrorRepeats = -1
		for range 10 {
			require.True(t, c.shouldRecover(restoring(), malformed("a")))
		}
	})
}

func TestRecoveryAttemptTimeoutDefaults(t *testing.T) {
	for _, tc := range []struct {
		attempt, connection time.Duration
		n                   int // the reconnection attempt
		want                time.Duration
	}{
		{0, defaultConnectionTimeout, 1, DefaultAttemptTimeout},
		{0, defaultConnectionTimeout, 2, 2 * DefaultAttemptTimeout}, // doubles
		{0, defaultConnectionTimeout, 3, 4 * DefaultAttemptTimeout},
		{0, defaultConnectionTimeout, 4, defaultConnectionTimeout}, // up to ConnectionTimeout
		{0, defaultConnectionTimeout, 40, defaultConnectionTimeout},
		{0, time.Second, 1, time.Second}, // a shorter ConnectionTimeout wins
		{0, -1, 3, 4 * DefaultAttemptTimeout},
		{2 * time.Second, time.Hour, 1, 2 * time.Second},
		{-1, time.Hour, 1, time.Hour},
	} {
		got := RecoveryConfig{AttemptTimeout: tc.attempt}.attemptTimeout(tc.connection, tc.n)
		require.Equal(t, tc.want, got, "AttemptTimeout %v, ConnectionTimeout %v, attempt %d", tc.attempt, tc.connection, tc.n)
	}
}
