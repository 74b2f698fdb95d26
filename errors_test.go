package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// Recoverable asks the error: an *Error by its reply code, and the
// client-side sentinels that name a passing failure say yes wherever they
// are in the chain, unless an error that knows better is found first.
func TestRecoverableAsksTheError(t *testing.T) {
	notFound := &amqp.Error{Code: amqp.CodeNotFound, Server: true}
	forced := &amqp.Error{Code: amqp.CodeConnectionForced, Server: true, Connection: true}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"an unrelated error", errors.New("boom"), false},
		{"a cancelled context", context.Canceled, false},
		{"ErrClosed", amqp.ErrClosed, false},
		{"ErrConnectionLost", amqp.ErrConnectionLost, true},
		{"ErrHeartbeatTimeout", amqp.ErrHeartbeatTimeout, true},
		{"ErrRecovering", amqp.ErrRecovering, true},
		{"ErrPublishLost", amqp.ErrPublishLost, true},
		{"a wrapped ErrConnectionLost", fmt.Errorf("%w: %w", amqp.ErrClosed, fmt.Errorf("%w: read: %w", amqp.ErrConnectionLost, errors.New("reset"))), true},
		{"404", notFound, false},
		{"320", forced, true},
		{"404 first, then a lost connection", fmt.Errorf("%w: %w", notFound, amqp.ErrConnectionLost), false},
		{"a lost connection first, then 404", fmt.Errorf("%w: %w", amqp.ErrConnectionLost, notFound), false},
		{"a malformed frame", amqp.ErrMalformedFrame, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, amqp.Recoverable(tc.err))
		})
	}
	// The sentinels are still matched by identity.
	require.ErrorIs(t, fmt.Errorf("x: %w", amqp.ErrConnectionLost), amqp.ErrConnectionLost)
	require.NotErrorIs(t, amqp.ErrConnectionLost, amqp.ErrHeartbeatTimeout)
	require.Equal(t, "amqp: connection lost", amqp.ErrConnectionLost.Error())
}
