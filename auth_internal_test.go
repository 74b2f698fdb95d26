package amqp

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPlainAuthResponse(t *testing.T) {
	resp, next, err := PlainAuth{Username: "bob", Password: "s3cret"}.Start(t.Context())
	require.NoError(t, err)
	require.Nil(t, next)
	require.Equal(t, []byte("\x00bob\x00s3cret"), resp)

	resp, _, err = PlainAuth{}.Start(t.Context())
	require.NoError(t, err)
	require.Equal(t, []byte{0, 0}, resp)

	for _, a := range []PlainAuth{{Username: "b\x00b", Password: "x"}, {Username: "bob", Password: "s3\x00cret"}} {
		_, _, err := a.Start(t.Context())
		require.ErrorContains(t, err, "NUL")
		require.NotContains(t, err.Error(), "s3")
	}
}

func TestAMQPlainAuthResponse(t *testing.T) {
	resp, next, err := AMQPlainAuth{Username: "bob", Password: "s3cret"}.Start(t.Context())
	require.NoError(t, err)
	require.Nil(t, next)
	want := []byte{
		5, 'L', 'O', 'G', 'I', 'N', // shortstr key
		'S', 0, 0, 0, 3, 'b', 'o', 'b', // longstr value
		8, 'P', 'A', 'S', 'S', 'W', 'O', 'R', 'D',
		'S', 0, 0, 0, 6, 's', '3', 'c', 'r', 'e', 't',
	}
	require.Equal(t, want, resp, "a table without its 4-byte length prefix")

	resp, _, err = AMQPlainAuth{}.Start(t.Context())
	require.NoError(t, err)
	require.Equal(t, []byte("\x05LOGINS\x00\x00\x00\x00\x08PASSWORDS\x00\x00\x00\x00"), resp)
}

func TestExternalAuthResponse(t *testing.T) {
	resp, next, err := ExternalAuth{}.Start(t.Context())
	require.NoError(t, err)
	require.Nil(t, next)
	require.NotNil(t, resp)
	require.Empty(t, resp)
	require.Equal(t, "EXTERNAL", ExternalAuth{}.Name())
}

func TestMechanismNames(t *testing.T) {
	for _, tc := range []struct {
		m    Mechanism
		name string
	}{
		{PlainAuth{}, "PLAIN"}, {&PlainAuth{}, "PLAIN"},
		{AMQPlainAuth{}, "AMQPLAIN"}, {&AMQPlainAuth{}, "AMQPLAIN"},
		{ExternalAuth{}, "EXTERNAL"}, {&ExternalAuth{}, "EXTERNAL"},
	} {
		require.Equal(t, tc.name, tc.m.Name())
	}
}

func TestMechanismPrintingRedacts(t *testing.T) {
	const password = "Hunter2Secret"
	for _, m := range []any{
		PlainAuth{Username: "bob", Password: password},
		&PlainAuth{Username: "bob", Password: password},
		AMQPlainAuth{Username: "bob", Password: password},
		&AMQPlainAuth{Username: "bob", Password: password},
		[]Mechanism{PlainAuth{Username: "bob", Password: password}},
		struct{ Auth Mechanism }{AMQPlainAuth{Username: "bob", Password: password}},
	} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v", "%10.3v"} {
			out := fmt.Sprintf(verb, m)
			require.NotContains(t, out, password, verb)
			require.NotContains(t, strings.ToLower(out), hex.EncodeToString([]byte(password)), verb)
		}
		require.Contains(t, fmt.Sprint(m), `"bob"`)
		require.Contains(t, fmt.Sprint(m), redactedSecret)

		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("auth", "m", m)
		slog.New(slog.NewTextHandler(&buf, nil)).Info("auth", "m", m)
		require.NotContains(t, buf.String(), password)
		require.Contains(t, buf.String(), "bob")
	}

	require.Equal(t, `PLAIN(username="bob", password=xxxxx)`, PlainAuth{Username: "bob", Password: "pw"}.String())
	require.Equal(t, `PLAIN(username="bob", password="")`, PlainAuth{Username: "bob"}.String(),
		"an empty password is shown as such: it reveals nothing and explains a refusal")
	require.Equal(t, `amqp.AMQPlainAuth{Username:"bob", Password:"xxxxx"}`,
		fmt.Sprintf("%#v", AMQPlainAuth{Username: "bob", Password: "pw"}))
}

func TestPickMechanism(t *testing.T) {
	tests := []struct {
		name    string
		server  string
		ours    []Mechanism
		want    string // the chosen mechanism's name; "" for an error
		wantErr string
	}{
		{"default PLAIN", "AMQPLAIN PLAIN", []Mechanism{PlainAuth{}}, "PLAIN", ""},
		{"our order wins", "PLAIN AMQPLAIN EXTERNAL", []Mechanism{ExternalAuth{}, PlainAuth{}}, "EXTERNAL", ""},
		{"skip unoffered", "PLAIN AMQPLAIN", []Mechanism{ExternalAuth{}, AMQPlainAuth{}, PlainAuth{}}, "AMQPLAIN", ""},
		{"extra whitespace", "  AMQPLAIN\tPLAIN  ", []Mechanism{PlainAuth{}}, "PLAIN", ""},
		{"custom", "CR-DEMO PLAIN", []Mechanism{named("CR-DEMO")}, "CR-DEMO", ""},
		{"nil entries skipped", "PLAIN", []Mechanism{nil, PlainAuth{}}, "PLAIN", ""},
		{"no common", "PLAIN AMQPLAIN", []Mechanism{ExternalAuth{}},
			"", "the server offers PLAIN AMQPLAIN; the client is configured for EXTERNAL"},
		{"case-sensitive", "plain", []Mechanism{PlainAuth{}},
			"", "the server offers plain; the client is configured for PLAIN"},
		{"server offers none", "", []Mechanism{PlainAuth{}, ExternalAuth{}},
			"", "the server offers none; the client is configured for PLAIN EXTERNAL"},
		{"client has none", "PLAIN", nil,
			"", "the server offers PLAIN; the client is configured for none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := pickMechanism(tc.server, tc.ours)
			if tc.wantErr != "" {
				require.ErrorIs(t, err, ErrAuthMechanism)
				require.ErrorContains(t, err, tc.wantErr)
				require.Nil(t, m)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, m.Name())
		})
	}
}

func TestPickMechanismErrorHidesPassword(t *testing.T) {
	_, err := pickMechanism("EXTERNAL", []Mechanism{PlainAuth{Username: "bob", Password: "Hunter2Secret"}})
	require.ErrorIs(t, err, ErrAuthMechanism)
	require.NotContains(t, err.Error(), "Hunter2Secret")
}

// crDemo is a two-step mechanism like RabbitMQ's CR-DEMO: the username
// first, then the password in answer to a challenge. It keeps per-exchange
// state in the closure Start returns, as Mechanism asks.
type crDemo struct{ user, pass string }

func (crDemo) Name() string { return "CR-DEMO" }

func (m crDemo) Start(context.Context) ([]byte, ChallengeFunc, error) {
	answered := false
	return []byte(m.user), func(_ context.Context, challenge []byte) ([]byte, error) {
		if answered {
			return nil, errors.New("second challenge")
		}
		answered = true
		if string(challenge) != "Please tell me your password" {
			return nil, fmt.Errorf("unexpected challenge %q", challenge)
		}
		return []byte("My password is " + m.pass), nil
	}, nil
}

// TestMechanismMultiStep shows the contract for a mechanism that answers
// connection.secure challenges: one Mechanism value serves concurrent
// exchanges, each with its own state.
func TestMechanismMultiStep(t *testing.T) {
	var mech Mechanism = crDemo{user: "bob", pass: "pw"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ctx := t.Context()
			m, err := pickMechanism("PLAIN CR-DEMO", []Mechanism{ExternalAuth{}, mech})
			require.NoError(t, err)
			resp, next, err := m.Start(ctx)
			require.NoError(t, err)
			require.Equal(t, "bob", string(resp))
			require.NotNil(t, next)
			resp, err = next(ctx, []byte("Please tell me your password"))
			require.NoError(t, err)
			require.Equal(t, "My password is pw", string(resp))
			_, err = next(ctx, []byte("again"))
			require.EqualError(t, err, "second challenge")
		})
	}
	wg.Wait()
}

func TestMechanismJSONRedacts(t *testing.T) {
	b, err := json.Marshal([]Mechanism{PlainAuth{Username: "bob", Password: "Hunter2Secret"}, AMQPlainAuth{Username: "al"}, ExternalAuth{}})
	require.NoError(t, err)
	require.JSONEq(t, `[{"mechanism":"PLAIN","username":"bob","password":"xxxxx"},
		{"mechanism":"AMQPLAIN","username":"al","password":""},{}]`, string(b))
}
