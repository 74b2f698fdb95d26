package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults that a zero Config field stands for.
const (
	defaultHost              = "localhost"
	defaultPort              = 5672
	defaultTLSPort           = 5671
	defaultUsername          = "guest"
	defaultPassword          = "guest"
	defaultVhost             = "/"
	defaultLocale            = "en_US"
	defaultConnectionTimeout = 30 * time.Second

	// defaultFrameMax is sent in connection.tune-ok when neither side sets
	// a limit: a bound on what the server may send us, and RabbitMQ's own default.
	defaultFrameMax = 128 << 10

	// defaultMaxBodySize is the largest message RabbitMQ 3.x accepts by
	// default (max_message_size); RabbitMQ 4 lowered its default to 16 MiB.
	// A broker with default settings never delivers a body we refuse.
	defaultMaxBodySize = 128 << 20

	modulePath = "github.com/amqp-go/amqp"
)

// Config says how to connect to a server. The zero value connects to
// localhost:5672 over plain TCP as guest/guest on vhost "/", and every zero
// field stands for the default its documentation gives. [ParseURL] builds a
// Config from an AMQP URL; DialConfig copies the Config it is given, so
// changing a Config afterwards never affects a connection.
//
// Printing a Config (with any fmt verb) or logging it with log/slog never
// shows the password: see [Config.String].
type Config struct {
	// Addrs lists the "host:port" addresses of the cluster's nodes. They are
	// tried in order until one completes the handshake; the error when all
	// fail names each address and why. An address without a port gets the
	// default port: 5671 with TLS, 5672 without. Zero means
	// "localhost:5672" ("localhost:5671" with TLS).
	Addrs []string

	// Username and Password are the credentials of the default PLAIN
	// mechanism: they are used only when SASL is empty. When both are
	// empty, guest/guest is used, RabbitMQ's default user (which RabbitMQ
	// lets in only from localhost).
	Username string
	Password string

	// Vhost is the virtual host to open. Zero means "/".
	Vhost string

	// SASL lists the authentication mechanisms the client may use, in order
	// of preference: the first one the server offers is used. Zero means
	// [PlainAuth] with Username and Password. Use [ExternalAuth] to
	// authenticate with a TLS client certificate.
	SASL []Mechanism

	// TLS, when non-nil, makes connections use TLS with this configuration.
	// The caller's value is cloned, never changed. If its ServerName is
	// empty, each address's host is used, so the server certificate is
	// verified against the host dialed. Verification is on unless the
	// configuration turns it off (InsecureSkipVerify). Client certificates
	// go in Certificates. Nil means plain TCP.
	TLS *tls.Config

	// Heartbeat is the heartbeat interval to negotiate. Zero accepts the
	// server's proposal (RabbitMQ's default is 60 s). A positive value
	// requests that interval, rounded up to whole seconds and at most
	// 65535 s: the smaller of it and the server's proposal is used, or it
	// alone if the server proposes none. A negative value disables heartbeats.
	// A peer that sends nothing for two intervals is considered dead.
	Heartbeat time.Duration

	// FrameMax is the largest frame, in bytes, to negotiate: the smaller of
	// it and the server's proposal is used. It must be at least 4096
	// ([MinFrameSize]). Zero accepts the server's proposal, or 131072
	// (128 KiB) if the server proposes no limit: the client always sets a
	// limit, which bounds the memory one inbound frame may take.
	FrameMax uint32

	// ChannelMax is the number of channels to negotiate: the smaller of it
	// and the server's proposal is used. Zero accepts the server's proposal,
	// or 65535, the protocol's maximum, if the server proposes no limit.
	ChannelMax uint16

	// ConnectionTimeout bounds each address's attempt: TCP dial, TLS
	// handshake and AMQP handshake. The context given to DialConfig bounds
	// the whole dial across all addresses. Zero means 30 s; a negative
	// value means no bound other than the context.
	ConnectionTimeout time.Duration

	// ConnectionName is a name for the connection, shown in the management
	// UI and logs of RabbitMQ (the connection_name client property). Zero
	// sends no name.
	ConnectionName string

	// ClientProperties are sent in connection.start-ok over the defaults
	// (product, version, platform, information, capabilities): a key given
	// here replaces the default, except "capabilities", whose table is
	// merged key by key into the default capabilities. ConnectionName,
	// when set, replaces "connection_name". Zero sends the defaults.
	ClientProperties Table

	// Locale is the message locale to request from those the server
	// offers. Zero means "en_US", the only one RabbitMQ offers.
	Locale string

	// MaxBodySize is the largest inbound message body, in bytes, the client
	// accepts. A delivery whose content header announces a larger body
	// closes the connection with [ErrBodyTooLarge] before anything is
	// buffered. Zero means 128 MiB, the largest default of any RabbitMQ
	// version (4.x defaults to 16 MiB, 3.x to 128 MiB, set by the server's
	// max_message_size). Set math.MaxUint64 to remove the limit.
	MaxBodySize uint64

	// Dial opens the network connection to an address of Addrs (network
	// is "tcp"); TLS, when configured, is layered on top by the client. The
	// context carries the ConnectionTimeout deadline. Nil means a
	// net.Dialer with default settings.
	//
	// The connection's read deadlines must work: a Consumer's Next that
	// reads the socket itself (see [Consumer.Next]) is interrupted by one
	// when its ctx ends. A net.Conn whose SetReadDeadline returns an error
	// is read by the reader goroutine alone; one that returns nil but
	// ignores the deadline leaves such a Next waiting for the next frame.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Recovery, when non-nil, turns on automatic connection recovery: a
	// connection lost to a network failure, a heartbeat timeout or a
	// recoverable server close is re-established behind the same
	// *Connection, *Channel and *Consumer values. Nil (the default) means a
	// lost connection stays lost. See [RecoveryConfig] and the package
	// documentation's section on recovery.
	Recovery *RecoveryConfig

	// Tracer, when non-nil, is told what the connection does: it implements
	// one or more of [ConnectTracer], [PublishTracer], [DeliveryTracer],
	// [CallTracer], [ChannelErrorTracer], [RecoveryTracer], [BlockedTracer]
	// and [ReturnTracer], each found once when dialing (a value that
	// implements none is an error). The otelamqp module builds OpenTelemetry
	// tracing and metrics on these hooks. Nil costs nothing.
	Tracer any

	// Logger, when non-nil, receives structured logs: connection opened
	// (Info) and closed (Info, or Error when lost for good), recovery steps
	// (Warn, Info on success, Error when it gives up), channel errors,
	// blocked (Warn) and unblocked (Info), and malformed messages (Warn).
	// Nothing is logged per message otherwise, and no record holds a
	// password or a message body. Records the reader notices are logged on
	// the connection's callback goroutine. Nil logs nothing.
	Logger *slog.Logger

	// For tests (see lead.go): noLend makes the reader goroutine do all
	// the reading; leaseMax, when set, replaces the lease timer's bound;
	// beforeLease runs on the reader goroutine between deciding to lend
	// and storing the lease.
	noLend      bool
	leaseMax    time.Duration
	beforeLease func()
}

// withDefaults returns a copy of c with every zero field replaced by its
// default, after checking the fields. The copy shares nothing that the
// caller may later change: Addrs, SASL and the client properties are new,
// and TLS is a clone. Its ClientProperties hold the complete table to send.
func (c Config) withDefaults() (Config, error) {
	d := c

	port := defaultPort
	if c.TLS != nil {
		port = defaultTLSPort
		d.TLS = c.TLS.Clone()
	}
	if len(c.Addrs) == 0 {
		d.Addrs = []string{net.JoinHostPort(defaultHost, strconv.Itoa(port))}
	} else {
		d.Addrs = make([]string, len(c.Addrs))
		for i, a := range c.Addrs {
			addr, err := withPort(a, port)
			if err != nil {
				return Config{}, fmt.Errorf("amqp: Config.Addrs[%d]: %w", i, err)
			}
			d.Addrs[i] = addr
		}
	}

	if len(c.SASL) == 0 {
		if c.Username == "" && c.Password == "" {
			d.Username, d.Password = defaultUsername, defaultPassword
		}
		d.SASL = []Mechanism{PlainAuth{Username: d.Username, Password: d.Password}}
	} else {
		for i, m := range c.SASL {
			if m == nil {
				return Config{}, fmt.Errorf("amqp: Config.SASL[%d] is nil", i)
			}
		}
		d.SASL = slices.Clone(c.SASL)
	}

	if d.Vhost == "" {
		d.Vhost = defaultVhost
	}
	if len(d.Vhost) > maxShortstr {
		return Config{}, fmt.Errorf("amqp: Config.Vhost is %d bytes long; the maximum is %d", len(d.Vhost), maxShortstr)
	}
	if d.FrameMax != 0 && d.FrameMax < MinFrameSize {
		return Config{}, fmt.Errorf("amqp: Config.FrameMax %d is below the protocol minimum %d", d.FrameMax, MinFrameSize)
	}
	if d.ConnectionTimeout == 0 {
		d.ConnectionTimeout = defaultConnectionTimeout
	}
	if d.Locale == "" {
		d.Locale = defaultLocale
	}
	if d.MaxBodySize == 0 {
		d.MaxBodySize = defaultMaxBodySize
	}
	if d.Dial == nil {
		var dialer net.Dialer
		d.Dial = dialer.DialContext
	}
	if c.Recovery != nil {
		r := c.Recovery.withDefaults()
		d.Recovery = &r
	}
	d.ClientProperties = c.clientProperties()
	return d, nil
}

// withPort returns addr, adding port if it has none. It accepts "host:port",
// "host", "[ipv6]:port", "[ipv6]" and a bare IPv6 address.
func withPort(addr string, port int) (string, error) {
	if addr == "" {
		return "", errors.New("empty address")
	}
	if host, p, err := net.SplitHostPort(addr); err == nil {
		if p == "" {
			return net.JoinHostPort(host, strconv.Itoa(port)), nil
		}
		return addr, nil
	}
	host := addr
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") && net.ParseIP(stripZone(host)) == nil {
		return "", fmt.Errorf("address %q is not host:port", addr)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// stripZone removes an IPv6 zone ("%eth0") from host.
func stripZone(host string) string {
	if i := strings.IndexByte(host, '%'); i >= 0 {
		return host[:i]
	}
	return host
}

// tlsConfigFor returns the TLS configuration for dialing addr: a clone of
// c.TLS whose ServerName, when empty, is addr's host. It returns nil if
// c.TLS is nil.
func (c Config) tlsConfigFor(addr string) *tls.Config {
	if c.TLS == nil {
		return nil
	}
	t := c.TLS.Clone()
	if t.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		t.ServerName = stripZone(host)
	}
	return t
}

// clientProperties returns the client properties to send in
// connection.start-ok: the defaults with ClientProperties and
// ConnectionName applied as the Config documents.
func (c Config) clientProperties() Table {
	caps := Table{
		"publisher_confirms":           true,
		"exchange_exchange_bindings":   true,
		"basic.nack":                   true,
		"consumer_cancel_notify":       true,
		"connection.blocked":           true,
		"authentication_failure_close": true,
		"per_consumer_qos":             true,
		"direct_reply_to":              true,
	}
	props := Table{
		"product":     modulePath,
		"version":     moduleVersion(),
		"platform":    "Go " + runtime.Version(),
		"information": "https://pkg.go.dev/" + modulePath,
	}
	for k, v := range c.ClientProperties {
		if k == "capabilities" {
			switch extra := v.(type) {
			case Table:
				maps.Copy(caps, extra)
				continue
			case map[string]any:
				maps.Copy(caps, extra)
				continue
			}
		}
		props[k] = v
	}
	if _, replaced := props["capabilities"]; !replaced {
		props["capabilities"] = caps
	}
	if c.ConnectionName != "" {
		props["connection_name"] = c.ConnectionName
	}
	return props
}

// moduleVersion is this module's version as the build recorded it, or
// "(devel)" when unknown, as in tests.
var moduleVersion = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == modulePath && bi.Main.Version != "" {
			return bi.Main.Version
		}
		for _, dep := range bi.Deps {
			if dep.Path == modulePath {
				if dep.Replace != nil && dep.Replace.Version != "" {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "(devel)"
})

// String describes the Config for logs and debugging: its non-zero fields,
// with the password shown as "xxxxx", TLS summarized (never its keys) and
// mechanisms by their String. It never contains the password.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("amqp.Config{")
	sep := ""
	field := func(name, value string) {
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(value)
		sep = " "
	}
	if len(c.Addrs) > 0 {
		field("Addrs", "["+strings.Join(c.Addrs, " ")+"]")
	}
	if c.Username != "" {
		field("Username", strconv.Quote(c.Username))
	}
	if c.Password != "" {
		field("Password", redactedSecret)
	}
	if c.Vhost != "" {
		field("Vhost", strconv.Quote(c.Vhost))
	}
	if len(c.SASL) > 0 {
		field("SASL", "["+strings.Join(mechanismStrings(c.SASL), " ")+"]")
	}
	if c.TLS != nil {
		var parts []string
		for _, a := range tlsSummary(c.TLS) {
			parts = append(parts, a.Key+":"+a.Value.String())
		}
		field("TLS", "{"+strings.Join(parts, " ")+"}")
	}
	if c.Heartbeat != 0 {
		field("Heartbeat", c.Heartbeat.String())
	}
	if c.FrameMax != 0 {
		field("FrameMax", strconv.FormatUint(uint64(c.FrameMax), 10))
	}
	if c.ChannelMax != 0 {
		field("ChannelMax", strconv.FormatUint(uint64(c.ChannelMax), 10))
	}
	if c.ConnectionTimeout != 0 {
		field("ConnectionTimeout", c.ConnectionTimeout.String())
	}
	if c.ConnectionName != "" {
		field("ConnectionName", strconv.Quote(c.ConnectionName))
	}
	if len(c.ClientProperties) > 0 {
		field("ClientProperties", fmt.Sprint(map[string]any(c.ClientProperties)))
	}
	if c.Locale != "" {
		field("Locale", strconv.Quote(c.Locale))
	}
	if c.MaxBodySize != 0 {
		field("MaxBodySize", strconv.FormatUint(c.MaxBodySize, 10))
	}
	if c.Dial != nil {
		field("Dial", "custom")
	}
	if c.Recovery != nil {
		field("Recovery", c.Recovery.String())
	}
	if c.Tracer != nil {
		field("Tracer", fmt.Sprintf("%T", c.Tracer))
	}
	if c.Logger != nil {
		field("Logger", "set")
	}
	b.WriteByte('}')
	return b.String()
}

// GoString returns String, for the %#v verb.
func (c Config) GoString() string { return c.String() }

// Format makes every fmt verb print String, so that no verb (%v, %+v, %#v,
// %s, ...) shows the password.
func (c Config) Format(f fmt.State, verb rune) {
	s := c.String()
	formatRedacted(f, verb, s, s)
}

// LogValue makes log/slog log the Config as a group of its non-zero fields,
// with the password masked and TLS summarized, like String.
func (c Config) LogValue() slog.Value {
	var attrs []slog.Attr
	if len(c.Addrs) > 0 {
		attrs = append(attrs, slog.Any("addrs", slices.Clone(c.Addrs)))
	}
	if c.Username != "" {
		attrs = append(attrs, slog.String("username", c.Username))
	}
	if c.Password != "" {
		attrs = append(attrs, slog.String("password", redactedSecret))
	}
	if c.Vhost != "" {
		attrs = append(attrs, slog.String("vhost", c.Vhost))
	}
	if len(c.SASL) > 0 {
		attrs = append(attrs, slog.Any("sasl", mechanismStrings(c.SASL)))
	}
	if c.TLS != nil {
		attrs = append(attrs, slog.Attr{Key: "tls", Value: slog.GroupValue(tlsSummary(c.TLS)...)})
	}
	if c.Heartbeat != 0 {
		attrs = append(attrs, slog.Duration("heartbeat", c.Heartbeat))
	}
	if c.FrameMax != 0 {
		attrs = append(attrs, slog.Uint64("frame_max", uint64(c.FrameMax)))
	}
	if c.ChannelMax != 0 {
		attrs = append(attrs, slog.Uint64("channel_max", uint64(c.ChannelMax)))
	}
	if c.ConnectionTimeout != 0 {
		attrs = append(attrs, slog.Duration("connection_timeout", c.ConnectionTimeout))
	}
	if c.ConnectionName != "" {
		attrs = append(attrs, slog.String("connection_name", c.ConnectionName))
	}
	if len(c.ClientProperties) > 0 {
		attrs = append(attrs, slog.Any("client_properties", map[string]any(c.ClientProperties)))
	}
	if c.Locale != "" {
		attrs = append(attrs, slog.String("locale", c.Locale))
	}
	if c.MaxBodySize != 0 {
		attrs = append(attrs, slog.Uint64("max_body_size", c.MaxBodySize))
	}
	if c.Dial != nil {
		attrs = append(attrs, slog.Bool("custom_dial", true))
	}
	if c.Recovery != nil {
		attrs = append(attrs, slog.String("recovery", c.Recovery.String()))
	}
	if c.Tracer != nil {
		attrs = append(attrs, slog.String("tracer", fmt.Sprintf("%T", c.Tracer)))
	}
	if c.Logger != nil {
		attrs = append(attrs, slog.Bool("logger", true))
	}
	return slog.GroupValue(attrs...)
}

// mechanismStrings returns each mechanism's String, or its Name for a
// mechanism without one: a custom mechanism's fields are never printed.
func mechanismStrings(ms []Mechanism) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		switch m := m.(type) {
		case nil:
			out[i] = "<nil>"
		case fmt.Stringer:
			out[i] = m.String()
		default:
			out[i] = m.Name()
		}
	}
	return out
}

// tlsSummary describes a TLS configuration without its keys or certificates.
func tlsSummary(t *tls.Config) []slog.Attr {
	attrs := []slog.Attr{}
	if t.ServerName != "" {
		attrs = append(attrs, slog.String("ServerName", t.ServerName))
	}
	if t.MinVersion != 0 {
		attrs = append(attrs, slog.String("MinVersion", tls.VersionName(t.MinVersion)))
	}
	if t.RootCAs != nil {
		attrs = append(attrs, slog.String("RootCAs", "custom"))
	}
	if n := len(t.Certificates); n > 0 || t.GetClientCertificate != nil {
		attrs = append(attrs, slog.Int("Certificates", n))
	}
	if t.InsecureSkipVerify {
		attrs = append(attrs, slog.Bool("InsecureSkipVerify", true))
	}
	return attrs
}
