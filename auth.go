package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// redactedSecret replaces a non-empty password wherever a configuration or a
// mechanism is printed or logged.
const redactedSecret = "xxxxx"

// Mechanism is a SASL authentication mechanism, used in the connection
// handshake (connection.start-ok, connection.secure, connection.secure-ok).
//
// The client sends the first mechanism in [Config.SASL] whose Name the server
// lists in connection.start. A Mechanism value may be shared by many
// connections at once, so per-exchange state belongs in what Start returns,
// never in the Mechanism itself. This package provides [PlainAuth],
// [AMQPlainAuth] and [ExternalAuth].
type Mechanism interface {
	// Name returns the mechanism's SASL name, such as "PLAIN". It is
	// compared exactly with the names the server offers.
	Name() string

	// Start begins one authentication exchange, for one connection
	// attempt. It returns the initial response, sent in
	// connection.start-ok, and next, which answers each connection.secure
	// challenge of this exchange in turn. next is nil for a mechanism that
	// expects no challenge; a challenge then fails the handshake. ctx bounds
	// the handshake, for mechanisms that fetch credentials.
	Start(ctx context.Context) (response []byte, next ChallengeFunc, err error)
}

// ChallengeFunc answers one connection.secure challenge of an authentication
// exchange begun by [Mechanism.Start] with the response to send in
// connection.secure-ok. Calls for one exchange are sequential.
type ChallengeFunc func(ctx context.Context, challenge []byte) (response []byte, err error)

// PlainAuth is the SASL PLAIN mechanism (RFC 4616): the username and
// password are sent in clear, so use it over TLS or on a trusted network.
// It is RabbitMQ's default. Printing or logging it never shows the password.
type PlainAuth struct {
	Username string
	Password string
}

// Name returns "PLAIN".
func (PlainAuth) Name() string { return "PLAIN" }

// Start returns the response "\x00" + Username + "\x00" + Password: an empty
// authorization identity, then the credentials. It fails if either contains
// a NUL byte, which PLAIN cannot carry.
func (a PlainAuth) Start(context.Context) ([]byte, ChallengeFunc, error) {
	if strings.IndexByte(a.Username, 0) >= 0 || strings.IndexByte(a.Password, 0) >= 0 {
		return nil, nil, errors.New("amqp: PLAIN: the username and password must not contain a NUL byte")
	}
	b := make([]byte, 0, 2+len(a.Username)+len(a.Password))
	b = append(b, 0)
	b = append(b, a.Username...)
	b = append(b, 0)
	b = append(b, a.Password...)
	return b, nil, nil
}

// String returns the mechanism and the username, with the password masked:
// PLAIN(username="bob", password=xxxxx).
func (a PlainAuth) String() string { return credString("PLAIN", a.Username, a.Password) }

// GoString is like String, for the %#v verb.
func (a PlainAuth) GoString() string { return credGoString("PlainAuth", a.Username, a.Password) }

// Format makes every fmt verb print String (GoString for %#v), so no verb
// shows the password.
func (a PlainAuth) Format(f fmt.State, verb rune) { formatRedacted(f, verb, a.String(), a.GoString()) }

// LogValue makes log/slog log the username and a masked password.
func (a PlainAuth) LogValue() slog.Value { return credLogValue(a.Name(), a.Username, a.Password) }

// MarshalJSON encodes the mechanism, the username and a masked password, so
// that encoding/json (used by slog's JSON handler for nested values) never
// shows the password.
func (a PlainAuth) MarshalJSON() ([]byte, error) { return credJSON(a.Name(), a.Username, a.Password) }

// AMQPlainAuth is RabbitMQ's AMQPLAIN mechanism: like PLAIN, the credentials
// travel in clear, encoded as a field table. Printing or logging it never
// shows the password.
type AMQPlainAuth struct {
	Username string
	Password string
}

// Name returns "AMQPLAIN".
func (AMQPlainAuth) Name() string { return "AMQPLAIN" }

// Start returns the response: the field table {LOGIN: Username, PASSWORD:
// Password}, both long strings, in that order and without the table's
// four-byte length prefix, as RabbitMQ expects.
func (a AMQPlainAuth) Start(context.Context) ([]byte, ChallengeFunc, error) {
	b := make([]byte, 0, 2*(1+8+1+4)+len(a.Username)+len(a.Password))
	var err error
	for _, f := range [...]struct{ key, value string }{{"LOGIN", a.Username}, {"PASSWORD", a.Password}} {
		b, _ = appendShortstr(b, f.key) // a constant key: cannot fail
		b = append(b, 'S')
		if b, err = appendLongstr(b, f.value); err != nil {
			return nil, nil, fmt.Errorf("amqp: AMQPLAIN: %s: %w", strings.ToLower(f.key), err)
		}
	}
	return b, nil, nil
}

// String returns the mechanism and the username, with the password masked:
// AMQPLAIN(username="bob", password=xxxxx).
func (a AMQPlainAuth) String() string { return credString("AMQPLAIN", a.Username, a.Password) }

// GoString is like String, for the %#v verb.
func (a AMQPlainAuth) GoString() string {
	return credGoString("AMQPlainAuth", a.Username, a.Password)
}

// Format makes every fmt verb print String (GoString for %#v), so no verb
// shows the password.
func (a AMQPlainAuth) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, a.String(), a.GoString())
}

// LogValue makes log/slog log the username and a masked password.
func (a AMQPlainAuth) LogValue() slog.Value { return credLogValue(a.Name(), a.Username, a.Password) }

// MarshalJSON encodes the mechanism, the username and a masked password, so
// that encoding/json never shows the password.
func (a AMQPlainAuth) MarshalJSON() ([]byte, error) {
	return credJSON(a.Name(), a.Username, a.Password)
}

// ExternalAuth is the SASL EXTERNAL mechanism: the server takes the identity
// from outside AMQP, with RabbitMQ's rabbitmq_auth_mechanism_ssl plugin from
// the client certificate of the TLS connection (see [Config.TLS]). The
// response is empty.
type ExternalAuth struct{}

// Name returns "EXTERNAL".
func (ExternalAuth) Name() string { return "EXTERNAL" }

// Start returns an empty response.
func (ExternalAuth) Start(context.Context) ([]byte, ChallengeFunc, error) {
	return []byte{}, nil, nil
}

// String returns "EXTERNAL".
func (ExternalAuth) String() string { return "EXTERNAL" }

// pickMechanism returns the first of ours that the server offers.
// serverMechanisms is the space-separated mechanisms field of
// connection.start. When none matches, the error wraps ErrAuthMechanism and
// lists both sides.
func pickMechanism(serverMechanisms string, ours []Mechanism) (Mechanism, error) {
	offered := strings.Fields(serverMechanisms)
	for _, m := range ours {
		if m == nil {
			continue
		}
		for _, name := range offered {
			if name == m.Name() {
				return m, nil
			}
		}
	}
	names := make([]string, 0, len(ours))
	for _, m := range ours {
		if m != nil {
			names = append(names, m.Name())
		}
	}
	return nil, fmt.Errorf("%w: the server offers %s; the client is configured for %s",
		ErrAuthMechanism, nameList(offered), nameList(names))
}

func nameList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, " ")
}

// maskSecret returns how a secret is shown: "xxxxx" when set, `""` when
// empty (an empty password is worth seeing, and reveals nothing).
func maskSecret(s string) string {
	if s == "" {
		return `""`
	}
	return redactedSecret
}

func credString(mech, user, pass string) string {
	return mech + "(username=" + strconv.Quote(user) + ", password=" + maskSecret(pass) + ")"
}

func credGoString(typ, user, pass string) string {
	return "amqp." + typ + "{Username:" + strconv.Quote(user) + ", Password:" + strconv.Quote(mask(pass)) + "}"
}

// mask is maskSecret without quotes around an empty string.
func mask(s string) string {
	if s == "" {
		return ""
	}
	return redactedSecret
}

func credLogValue(mech, user, pass string) slog.Value {
	return slog.GroupValue(
		slog.String("mechanism", mech),
		slog.String("username", user),
		slog.String("password", mask(pass)),
	)
}

func credJSON(mech, user, pass string) ([]byte, error) {
	return json.Marshal(struct {
		Mechanism string `json:"mechanism"`
		Username  string `json:"username"`
		Password  string `json:"password"`
	}{mech, user, mask(pass)})
}

// formatRedacted implements fmt.Formatter for types that hold a secret: %#v
// prints gostr, every other verb prints str as a string would be, so no verb
// reaches the struct's fields.
func formatRedacted(f fmt.State, verb rune, str, gostr string) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, gostr)
		return
	}
	switch verb {
	case 'v', 's', 'q', 'x', 'X':
		fmt.Fprintf(f, fmt.FormatString(f, verb), str)
	default:
		fmt.Fprintf(f, "%%!%c(%s)", verb, str)
	}
}

// UpdateSecret replaces the secret (such as an OAuth 2 token) the connection
// authenticated with, using connection.update-secret, and waits for the
// server's update-secret-ok, bounded by ctx.
//
// The connection remembers the secret: a recovery then logs in with it in
// place of the password of Config's PLAIN or AMQPLAIN mechanism, so an
// expired token is not sent again. (A custom [Mechanism] should fetch the
// current token itself.)
func (c *Connection) UpdateSecret(ctx context.Context, secret, reason string) error {
	if err := c.waitUp(ctx); err != nil {
		return err
	}
	_, err := c.cur.Load().ch0.call(ctx, &ConnectionUpdateSecret{NewSecret: secret, Reason: reason}, callOpts{})
	if err == nil {
		c.secret.Store(&secret)
	}
	return err
}

// mechanisms returns the SASL mechanisms to log in with: Config's, with the
// password replaced by the secret of the last successful UpdateSecret.
func (c *Connection) mechanisms() []Mechanism {
	secret := c.secret.Load()
	if secret == nil {
		return c.cfg.SASL
	}
	out := make([]Mechanism, len(c.cfg.SASL))
	for i, m := range c.cfg.SASL {
		switch m := m.(type) {
		case PlainAuth:
			m.Password = *secret
			out[i] = m
		case *PlainAuth:
			cp := *m
			cp.Password = *secret
			out[i] = cp
		case AMQPlainAuth:
			m.Password = *secret
			out[i] = m
		case *AMQPlainAuth:
			cp := *m
			cp.Password = *secret
			out[i] = cp
		default:
			out[i] = m
		}
	}
	return out
}
