package amqp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfigZeroValueDefaults(t *testing.T) {
	d, err := Config{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, []string{"localhost:5672"}, d.Addrs)
	require.Equal(t, "guest", d.Username)
	require.Equal(t, "guest", d.Password)
	require.Equal(t, []Mechanism{PlainAuth{Username: "guest", Password: "guest"}}, d.SASL)
	require.Equal(t, "/", d.Vhost)
	require.Nil(t, d.TLS)
	require.Zero(t, d.Heartbeat)
	require.Zero(t, d.FrameMax)
	require.Zero(t, d.ChannelMax)
	require.Equal(t, 30*time.Second, d.ConnectionTimeout)
	require.Empty(t, d.ConnectionName)
	require.Equal(t, "en_US", d.Locale)
	require.Equal(t, uint64(128<<20), d.MaxBodySize)
	require.NotNil(t, d.Dial)
	require.Equal(t, "github.com/amqp-go/amqp", d.ClientProperties["product"])

	// The zero Config and the empty URL mean the same.
	u, err := ParseURL("amqp://")
	require.NoError(t, err)
	du, err := u.withDefaults()
	require.NoError(t, err)
	du.Dial, d.Dial = nil, nil
	require.Equal(t, d, du)

	// With TLS, the default port is 5671.
	caller := &tls.Config{MinVersion: tls.VersionTLS13}
	d, err = Config{TLS: caller}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, []string{"localhost:5671"}, d.Addrs)
	require.NotSame(t, caller, d.TLS, "the caller's TLS config is cloned")
	require.Equal(t, uint16(tls.VersionTLS13), d.TLS.MinVersion)
}

func TestConfigDefaultDialWorks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	d, err := Config{}.withDefaults()
	require.NoError(t, err)
	conn, err := d.Dial(t.Context(), "tcp", ln.Addr().String())
	require.NoError(t, err)
	require.NoError(t, conn.Close())
}

func TestConfigWithDefaultsKeepsSetFields(t *testing.T) {
	dial := func(context.Context, string, string) (net.Conn, error) { return nil, nil }
	c := Config{
		Addrs:             []string{"h1:1", "h2"},
		Vhost:             "v",
		Heartbeat:         -1,
		FrameMax:          8192,
		ChannelMax:        10,
		ConnectionTimeout: -1,
		ConnectionName:    "n",
		Locale:            "de_DE",
		MaxBodySize:       1,
		Dial:              dial,
	}
	d, err := c.withDefaults()
	require.NoError(t, err)
	require.Equal(t, []string{"h1:1", "h2:5672"}, d.Addrs)
	require.Equal(t, []string{"h1:1", "h2"}, c.Addrs, "the caller's slice is not changed")
	require.Equal(t, "v", d.Vhost)
	require.Equal(t, time.Duration(-1), d.Heartbeat)
	require.Equal(t, uint32(8192), d.FrameMax)
	require.Equal(t, uint16(10), d.ChannelMax)
	require.Equal(t, time.Duration(-1), d.ConnectionTimeout)
	require.Equal(t, "de_DE", d.Locale)
	require.Equal(t, uint64(1), d.MaxBodySize)
	require.Equal(t, "n", d.ClientProperties["connection_name"])
	require.NotNil(t, d.Dial)
}

func TestConfigCredentialDefaults(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		wantSASL []Mechanism
	}{
		{"none: guest", Config{}, []Mechanism{PlainAuth{Username: "guest", Password: "guest"}}},
		{"username only: empty password", Config{Username: "bob"}, []Mechanism{PlainAuth{Username: "bob"}}},
		{"password only: empty username", Config{Password: "pw"}, []Mechanism{PlainAuth{Password: "pw"}}},
		{"both", Config{Username: "bob", Password: "pw"}, []Mechanism{PlainAuth{Username: "bob", Password: "pw"}}},
		{"SASL set: credentials unused", Config{SASL: []Mechanism{ExternalAuth{}}}, []Mechanism{ExternalAuth{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.cfg.withDefaults()
			require.NoError(t, err)
			require.Equal(t, tc.wantSASL, d.SASL)
		})
	}

	// The SASL slice is copied.
	c := Config{SASL: []Mechanism{ExternalAuth{}}}
	d, err := c.withDefaults()
	require.NoError(t, err)
	d.SASL[0] = PlainAuth{}
	require.Equal(t, ExternalAuth{}, c.SASL[0])
}

func TestConfigAddrs(t *testing.T) {
	tests := []struct {
		in, want, wantTLS string
	}{
		{"h:1", "h:1", "h:1"},
		{"h", "h:5672", "h:5671"},
		{"h:", "h:5672", "h:5671"},
		{"10.0.0.1", "10.0.0.1:5672", "10.0.0.1:5671"},
		{"[::1]:7", "[::1]:7", "[::1]:7"},
		{"[::1]", "[::1]:5672", "[::1]:5671"},
		{"::1", "[::1]:5672", "[::1]:5671"},
		{"fe80::1%eth0", "[fe80::1%eth0]:5672", "[fe80::1%eth0]:5671"},
		{"h:amqp", "h:amqp", "h:amqp"},
	}
	for _, tc := range tests {
		d, err := Config{Addrs: []string{tc.in}}.withDefaults()
		require.NoError(t, err, tc.in)
		require.Equal(t, []string{tc.want}, d.Addrs, tc.in)
		d, err = Config{Addrs: []string{tc.in}, TLS: &tls.Config{}}.withDefaults()
		require.NoError(t, err, tc.in)
		require.Equal(t, []string{tc.wantTLS}, d.Addrs, tc.in)
	}
}

func TestConfigInvalid(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"empty address", Config{Addrs: []string{"h", ""}}, "Config.Addrs[1]: empty address"},
		{"bad address", Config{Addrs: []string{"a:b:c"}}, `Config.Addrs[0]: address "a:b:c" is not host:port`},
		{"nil mechanism", Config{SASL: []Mechanism{ExternalAuth{}, nil}}, "Config.SASL[1] is nil"},
		{"small frame", Config{FrameMax: 4095}, "Config.FrameMax 4095 is below the protocol minimum 4096"},
		{"long vhost", Config{Vhost: strings.Repeat("v", 256)}, "Config.Vhost is 256 bytes long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Password = "Hunter2Secret"
			_, err := tc.cfg.withDefaults()
			require.ErrorContains(t, err, tc.wantErr)
			require.True(t, strings.HasPrefix(err.Error(), "amqp: "), err.Error())
			require.NotContains(t, err.Error(), "Hunter2Secret")
		})
	}
	_, err := Config{FrameMax: 4096}.withDefaults()
	require.NoError(t, err)
}

func TestConfigTLSConfigFor(t *testing.T) {
	require.Nil(t, Config{}.tlsConfigFor("h:1"))

	caller := &tls.Config{MinVersion: tls.VersionTLS12}
	c := Config{TLS: caller}
	for addr, want := range map[string]string{
		"rabbit.example.com:5671": "rabbit.example.com",
		"10.0.0.1:5671":           "10.0.0.1",
		"[::1]:5671":              "::1",
		"[fe80::1%eth0]:5671":     "fe80::1",
		"noport":                  "noport",
	} {
		got := c.tlsConfigFor(addr)
		require.Equal(t, want, got.ServerName, addr)
		require.Equal(t, uint16(tls.VersionTLS12), got.MinVersion)
		require.NotSame(t, caller, got)
	}
	require.Empty(t, caller.ServerName, "the caller's config is never changed")

	c.TLS = &tls.Config{ServerName: "explicit"}
	require.Equal(t, "explicit", c.tlsConfigFor("other:5671").ServerName)
}

func TestConfigNegotiate(t *testing.T) {
	tests := []struct {
		name            string
		cfg             Config
		sCh, sFrame, sH uint32 // the server's proposal
		want            tuneParams
	}{
		{"zero config takes the server's", Config{}, 2047, 131072, 60, tuneParams{2047, 131072, 60}},
		{"server has no limits", Config{}, 0, 0, 0, tuneParams{65535, 128 << 10, 0}},
		{"ours smaller", Config{ChannelMax: 10, FrameMax: 8192, Heartbeat: 5 * time.Second}, 2047, 131072, 60, tuneParams{10, 8192, 5}},
		{"server smaller", Config{ChannelMax: 4000, FrameMax: 1 << 20, Heartbeat: 600 * time.Second}, 2047, 131072, 60, tuneParams{2047, 131072, 60}},
		{"server unlimited, ours set", Config{ChannelMax: 10, FrameMax: 8192, Heartbeat: 5 * time.Second}, 0, 0, 0, tuneParams{10, 8192, 5}},
		{"heartbeat disabled", Config{Heartbeat: -1}, 0, 0, 60, tuneParams{65535, 128 << 10, 0}},
		{"heartbeat rounded up", Config{Heartbeat: 1500 * time.Millisecond}, 0, 0, 60, tuneParams{65535, 128 << 10, 2}},
		{"heartbeat below a second", Config{Heartbeat: time.Nanosecond}, 0, 0, 60, tuneParams{65535, 128 << 10, 1}},
		{"heartbeat capped", Config{Heartbeat: 100000 * time.Hour}, 0, 0, 0, tuneParams{65535, 128 << 10, 65535}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.negotiate(uint16(tc.sCh), tc.sFrame, uint16(tc.sH))
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := Config{}.negotiate(0, 1024, 0)
	require.ErrorContains(t, err, "the server proposed frame_max 1024, below the protocol minimum 4096")
}

func TestConfigClientProperties(t *testing.T) {
	p := Config{}.clientProperties()
	require.Equal(t, "github.com/amqp-go/amqp", p["product"])
	require.Equal(t, "Go "+runtime.Version(), p["platform"])
	require.NotEmpty(t, p["version"])
	require.NotEmpty(t, p["information"])
	require.NotContains(t, p, "connection_name")
	require.Equal(t, Table{
		"publisher_confirms":           true,
		"exchange_exchange_bindings":   true,
		"basic.nack":                   true,
		"consumer_cancel_notify":       true,
		"connection.blocked":           true,
		"authentication_failure_close": true,
		"per_consumer_qos":             true,
		"direct_reply_to":              true,
	}, p["capabilities"])

	user := Table{
		"product":         "my-app",
		"team":            "payments",
		"connection_name": "from-properties",
		"capabilities":    Table{"connection.blocked": false, "x-custom": true},
	}
	c := Config{ClientProperties: user, ConnectionName: "orders"}
	p = c.clientProperties()
	require.Equal(t, "my-app", p["product"])
	require.Equal(t, "payments", p["team"])
	require.Equal(t, "orders", p["connection_name"], "ConnectionName wins")
	caps := p["capabilities"].(Table)
	require.Equal(t, false, caps["connection.blocked"])
	require.Equal(t, true, caps["x-custom"])
	require.Equal(t, true, caps["publisher_confirms"], "capabilities are merged, not replaced")
	require.Equal(t, Table{"connection.blocked": false, "x-custom": true}, user["capabilities"], "the caller's table is not changed")
	require.Len(t, user, 4)

	p = Config{ClientProperties: Table{"capabilities": map[string]any{"x": true}}}.clientProperties()
	require.Equal(t, true, p["capabilities"].(Table)["x"])
	require.Equal(t, true, p["capabilities"].(Table)["basic.nack"])

	d, err := c.withDefaults()
	require.NoError(t, err)
	require.Equal(t, d.ClientProperties, d.clientProperties(), "applying the defaults twice changes nothing")

	p = Config{ClientProperties: Table{"connection_name": "props-only"}}.clientProperties()
	require.Equal(t, "props-only", p["connection_name"])
}

func TestConfigPrintingRedacts(t *testing.T) {
	const password = "Hunter2Secret"
	cert := tls.Certificate{Certificate: [][]byte{[]byte("DER")}}
	c := Config{
		Addrs:             []string{"h1:5671", "[::1]:5671"},
		Username:          "bob",
		Password:          password,
		Vhost:             "/",
		SASL:              []Mechanism{PlainAuth{Username: "bob", Password: password}, AMQPlainAuth{Username: "bob", Password: password}, ExternalAuth{}, named("X")},
		TLS:               &tls.Config{ServerName: "rabbit", MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true},
		Heartbeat:         10 * time.Second,
		FrameMax:          8192,
		ChannelMax:        7,
		ConnectionTimeout: time.Second,
		ConnectionName:    "orders",
		ClientProperties:  Table{"team": "payments"},
		Locale:            "en_US",
		MaxBodySize:       1 << 20,
		Dial:              func(context.Context, string, string) (net.Conn, error) { return nil, nil },
	}

	want := `amqp.Config{Addrs:[h1:5671 [::1]:5671] Username:"bob" Password:xxxxx Vhost:"/" ` +
		`SASL:[PLAIN(username="bob", password=xxxxx) AMQPLAIN(username="bob", password=xxxxx) EXTERNAL X] ` +
		`TLS:{ServerName:rabbit MinVersion:TLS 1.2 Certificates:1 InsecureSkipVerify:true} ` +
		`Heartbeat:10s FrameMax:8192 ChannelMax:7 ConnectionTimeout:1s ConnectionName:"orders" ` +
		`ClientProperties:map[team:payments] Locale:"en_US" MaxBodySize:1048576 Dial:custom}`
	require.Equal(t, want, c.String())
	require.Equal(t, "amqp.Config{}", Config{}.String())

	for _, v := range []any{c, &c, struct{ Cfg Config }{c}, []Config{c}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v", "%-5.3v"} {
			out := fmt.Sprintf(verb, v)
			require.NotContains(t, out, password, verb)
			require.NotContains(t, strings.ToLower(out), hex.EncodeToString([]byte(password)), verb)
		}
	}
	require.Equal(t, want, fmt.Sprintf("%+v", c))
	require.Equal(t, want, fmt.Sprintf("%#v", c))

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("dial", "config", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("dial", "config", c, "ptr", &c)
	out := buf.String()
	require.NotContains(t, out, password)
	require.Contains(t, out, `"password":"xxxxx"`)
	require.Contains(t, out, `config.password=xxxxx`)
	require.Contains(t, out, `"username":"bob"`)
	require.Contains(t, out, `"tls":{"ServerName":"rabbit"`)
	require.NotContains(t, out, "DER")
}

func TestConfigPrintingShowsEmptyPasswordAsAbsent(t *testing.T) {
	require.Equal(t, `amqp.Config{Username:"bob"}`, Config{Username: "bob"}.String())
}

func TestModuleVersion(t *testing.T) {
	require.Equal(t, "(devel)", moduleVersion(), "tests have no recorded module version")
}
