package amqp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The query parameters ParseURL knows, in the order its errors list them.
var urlParams = []string{
	"heartbeat", "frame_max", "channel_max", "connection_timeout", "auth_mechanism", "connection_name", "recovery",
	"recovery_min_backoff", "recovery_max_backoff", "recovery_max_attempts", "recovery_attempt_timeout",
	"recovery_protocol_error_repeats", "recovery_fail_fast", "recovery_republish", "recovery_skip_topology",
	"cacertfile", "certfile", "keyfile", "server_name_indication", "verify",
}

// ParseURL parses an AMQP URL, as specified at
// https://www.rabbitmq.com/docs/uri-spec, into a Config:
//
//	amqp[s]://[username[:password]@]host[:port][,host[:port]...][/vhost][?name=value&...]
//
// The scheme amqp means plain TCP, by default on port 5672; amqps means TLS,
// by default on port 5671, with verification on and TLS 1.2 at least.
// Username, password and vhost are percent-decoded, so a password containing
// '@', ':', '/', '?' or '#' must encode them (%40, %3A, %2F, %3F, %23).
//
// Without a username and password, the Config leaves both empty, which means
// guest/guest. With a username and no password, the password is empty.
//
// The host part is one host or a comma-separated list of hosts, each with an
// optional port, which become [Config.Addrs] in order; an IPv6 address goes
// in brackets, as in [::1]:5672. With no host, Addrs is left empty, which
// means localhost.
//
// The path names the vhost: none or "/" leaves Vhost empty, meaning "/";
// "/%2F" is "/" too; "/sales" is "sales"; "/a%2Fb" is "a/b". A path of more
// than one segment, such as "/a/b", is an error. So is a raw '@' in the path
// of a URL without userinfo ("amqp://host/a@b"): it is what a password with
// an unencoded '/' looks like, so write '@' in a vhost as %40.
//
// These query parameters are accepted; any other one is an error:
//
//   - heartbeat: the heartbeat interval in whole seconds; 0 disables
//     heartbeats (Heartbeat -1).
//   - frame_max: FrameMax in bytes; 0 accepts the server's.
//   - channel_max: ChannelMax; 0 accepts the server's.
//   - connection_timeout: ConnectionTimeout in milliseconds, as in the
//     RabbitMQ URI parameters; 0 means the default.
//   - auth_mechanism: plain, amqplain or external, repeatable, in order of
//     preference; it sets SASL, with the URL's credentials (guest/guest
//     without userinfo).
//   - connection_name: ConnectionName.
//   - recovery: on turns on automatic connection recovery with the defaults
//     of [RecoveryConfig] (Recovery set to a zero RecoveryConfig); off, the
//     default, leaves it off.
//   - recovery_min_backoff, recovery_max_backoff and
//     recovery_attempt_timeout: RecoveryConfig's MinBackoff, MaxBackoff and
//     AttemptTimeout in whole milliseconds; 0 means the default.
//   - recovery_max_attempts: MaxAttempts; 0 means no limit.
//   - recovery_protocol_error_repeats: ProtocolErrorRepeats; 0 means the
//     default, -1 no limit.
//   - recovery_fail_fast, recovery_republish and recovery_skip_topology:
//     true or false, for FailFast, Republish and SkipTopology.
//
// The recovery_ parameters need recovery=on in the same URL: they tune a
// recovery that the URL turns on, and are an error otherwise. The hooks of
// recovery (listeners, a custom Mechanism) have no URL form.
//   - cacertfile: a PEM file of the CA certificates that verify the server,
//     instead of the system's.
//   - certfile and keyfile (together): PEM files of the client certificate
//     and its unencrypted private key, for servers that check clients and
//     for [ExternalAuth].
//   - server_name_indication: the name the server certificate is checked
//     against and sent in SNI, instead of each address's host.
//   - verify: verify_peer (the default) or verify_none, which turns off all
//     verification of the server's certificate (InsecureSkipVerify) and so
//     any protection against a man in the middle: for tests only.
//
// The TLS parameters need the amqps scheme. ParseURL reads the files, so a
// missing or invalid file is reported here, naming the file.
//
// A malformed URL yields a [*URLError] naming the part at fault. It never
// contains the password. If the URL suggests a password with an unencoded
// '/', '?' or '#' (an '@' after the host part), the error shows no values
// at all, since any of them might be part of the password.
func ParseURL(rawURL string) (Config, error) {
	var p urlParser
	return p.parse(rawURL)
}

// urlParser holds the state of one ParseURL call.
type urlParser struct {
	// quiet is set when an '@' follows the host part: the userinfo may
	// have been split by an unencoded '/', '?' or '#', so any part of the
	// URL may hold a piece of the password and errors show no values.
	quiet bool
}

const quietHint = " (values not shown: an '@' after the host suggests a '/', '?' or '#' in the password; " +
	"percent-encode them as %2F, %3F and %23)"

func (p *urlParser) fail(part string, err error) error {
	if p.quiet {
		err = fmt.Errorf("%w%s", err, quietHint)
	}
	return &URLError{Part: part, Err: err}
}

func (p *urlParser) failf(part, format string, args ...any) error {
	return p.fail(part, fmt.Errorf(format, args...))
}

// show quotes a value for an error message, unless values are hidden.
func (p *urlParser) show(s string) string {
	if p.quiet {
		return "(value hidden)"
	}
	return strconv.Quote(s)
}

// tlsParams are the TLS query parameters of a URL.
type tlsParams struct {
	first               string // the first TLS parameter given, for errors
	caFile, certFile    string
	keyFile, serverName string
	verifyNone          bool
}

func (p *urlParser) parse(raw string) (Config, error) {
	for i := 0; i < len(raw); i++ {
		if b := raw[i]; b <= ' ' || b == 0x7f {
			return Config{}, p.failf("URL", "a space or control character at byte %d; percent-encode it", i)
		}
	}

	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Config{}, p.failf("scheme", `the URL does not start with "amqp://" or "amqps://"`)
	}
	useTLS := false
	switch strings.ToLower(scheme) {
	case "amqp":
	case "amqps":
		useTLS = true
	default:
		if isScheme(scheme) {
			return Config{}, p.failf("scheme", "%q is not amqp or amqps", scheme)
		}
		return Config{}, p.failf("scheme", `the URL does not start with "amqp://" or "amqps://"`)
	}
	port := defaultPort
	if useTLS {
		port = defaultTLSPort
	}

	// Split per RFC 3986: the authority ends at the first '/', '?' or '#';
	// the fragment starts at the first '#', the query at the first '?'
	// before it.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, path := rest[:end], rest[end:]
	p.quiet = !strings.Contains(authority, "@") && strings.Contains(path, "@")
	path, _, hasFragment := strings.Cut(path, "#")
	path, query, _ := strings.Cut(path, "?")
	if p.quiet && strings.Contains(path, "@") {
		// Most likely a password with a '/', as base64 ones have. Parsing on
		// would dial a piece of the password as a host.
		return Config{}, &URLError{Part: "userinfo", Err: errors.New(
			"an '@' follows the host: percent-encode '/', '?', '#' and '@' in the username " +
				"and password (%2F, %3F, %23, %40), and '@' in the vhost (%40); values not shown")}
	}
	if hasFragment {
		return Config{}, p.failf("fragment", "an AMQP URL has no fragment; percent-encode '#' as %%23")
	}

	var c Config
	username, password := defaultUsername, defaultPassword // for auth_mechanism
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo := authority[:at]
		authority = authority[at+1:]
		rawUser, rawPass, _ := strings.Cut(userinfo, ":")
		var err error
		if c.Username, err = url.PathUnescape(rawUser); err != nil {
			return Config{}, p.failf("username", "invalid percent-encoding")
		}
		if c.Password, err = url.PathUnescape(rawPass); err != nil {
			return Config{}, p.failf("password", "invalid percent-encoding")
		}
		username, password = c.Username, c.Password
	}

	if authority != "" {
		hosts := strings.Split(authority, ",")
		for _, h := range hosts {
			if h == "" {
				return Config{}, p.failf("host", "an empty entry in the host list %s", p.show(authority))
			}
			addr, err := p.hostPort(h, port)
			if err != nil {
				return Config{}, err
			}
			c.Addrs = append(c.Addrs, addr)
		}
	}

	if path != "" && path != "/" {
		seg := path[1:] // path starts with '/': the authority ended there
		if strings.Contains(seg, "/") {
			return Config{}, p.failf("vhost", `the path %s has more than one segment; write a "/" inside a vhost name as %%2F`, p.show(path))
		}
		vhost, err := url.PathUnescape(seg)
		if err != nil {
			return Config{}, p.failf("vhost", "invalid percent-encoding in %s", p.show(seg))
		}
		if len(vhost) > maxShortstr {
			return Config{}, p.failf("vhost", "%d bytes long; the maximum is %d", len(vhost), maxShortstr)
		}
		c.Vhost = vhost
	}

	var tp tlsParams
	var rp recoveryParams
	if err := p.parseQuery(query, &c, &tp, &rp, username, password); err != nil {
		return Config{}, err
	}
	if rp.first != "" {
		if c.Recovery == nil {
			return Config{}, p.failf("parameter "+rp.first, "tunes recovery, which needs recovery=on")
		}
		*c.Recovery = rp.config
	}
	if tp.first != "" && !useTLS {
		return Config{}, p.failf("parameter "+tp.first, "a TLS option, which needs the amqps scheme")
	}
	if useTLS {
		t, err := p.tlsConfig(tp)
		if err != nil {
			return Config{}, err
		}
		c.TLS = t
	}
	return c, nil
}

// hostPort parses one entry of the host list into "host:port".
func (p *urlParser) hostPort(entry string, port int) (string, error) {
	var host, portStr string
	if strings.HasPrefix(entry, "[") {
		end := strings.IndexByte(entry, ']')
		if end < 0 {
			return "", p.failf("host", "%s lacks the ']' that closes an IPv6 address", p.show(entry))
		}
		after := entry[end+1:]
		if after != "" {
			if after[0] != ':' {
				return "", p.failf("host", "%s after an IPv6 address; want :port", p.show(after))
			}
			portStr = after[1:]
		}
		h, err := url.PathUnescape(entry[1:end]) // a zone is written %25eth0
		if err != nil || !strings.Contains(h, ":") || net.ParseIP(stripZone(h)) == nil {
			return "", p.failf("host", "%s is not an IPv6 address", p.show(entry[:end+1]))
		}
		host = h
	} else {
		host = entry
		if i := strings.LastIndexByte(entry, ':'); i >= 0 {
			host, portStr = entry[:i], entry[i+1:]
		}
		if strings.Contains(host, ":") {
			return "", p.failf("host", "%s: an IPv6 address goes in brackets, as in [::1]:5672", p.show(entry))
		}
		h, err := url.PathUnescape(host)
		if err != nil || !isHostname(h) {
			return "", p.failf("host", "%s is not a host name or address", p.show(host))
		}
		host = h
	}
	if host == "" {
		host = defaultHost
	}
	if portStr != "" {
		n, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || n == 0 || !isDigits(portStr) {
			return "", p.failf("port", "%s is not a port number from 1 to 65535", p.show(portStr))
		}
		port = int(n)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// recoveryParams are the recovery_ query parameters of a URL.
type recoveryParams struct {
	first  string // the first one given, for errors
	config RecoveryConfig
}

func (p *urlParser) parseQuery(query string, c *Config, tp *tlsParams, rp *recoveryParams, username, password string) error {
	seen := make(map[string]bool)
	for pair := range strings.SplitSeq(query, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return p.failf("query", "invalid percent-encoding in a parameter name")
		}
		part := "parameter " + key
		switch key {
		case "fail_if_no_peer_cert", "depth", "password":
			return p.failf(part, "an option of RabbitMQ's Erlang client that this client does not support")
		default:
			if !slices.Contains(urlParams, key) {
				what := "an unknown parameter"
				if !p.quiet && isParamName(key) {
					what = "unknown parameter " + strconv.Quote(key)
				}
				return p.failf("query", "%s; the parameters are %s", what, strings.Join(urlParams, ", "))
			}
		}
		if key != "auth_mechanism" && seen[key] {
			return p.failf(part, "given more than once")
		}
		seen[key] = true
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return p.failf(part, "invalid percent-encoding in the value")
		}

		switch key {
		case "heartbeat":
			n, err := strconv.ParseUint(value, 10, 16)
			if err != nil || !isDigits(value) {
				return p.failf(part, "%s is not a whole number of seconds from 0 to 65535", p.show(value))
			}
			c.Heartbeat = time.Duration(n) * time.Second
			if n == 0 {
				c.Heartbeat = -1
			}
		case "frame_max":
			n, err := strconv.ParseUint(value, 10, 32)
			if err != nil || !isDigits(value) {
				return p.failf(part, "%s is not a number of bytes from %d to %d, or 0", p.show(value), MinFrameSize, uint32(math.MaxUint32))
			}
			if n != 0 && n < MinFrameSize {
				return p.failf(part, "%s is below the protocol minimum %d", p.show(value), MinFrameSize)
			}
			c.FrameMax = uint32(n)
		case "channel_max":
			n, err := strconv.ParseUint(value, 10, 16)
			if err != nil || !isDigits(value) {
				return p.failf(part, "%s is not a number from 0 to 65535", p.show(value))
			}
			c.ChannelMax = uint16(n)
		case "connection_timeout":
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil || !isDigits(value) || n > math.MaxInt64/uint64(time.Millisecond) {
				return p.failf(part, "%s is not a whole number of milliseconds", p.show(value))
			}
			c.ConnectionTimeout = time.Duration(n) * time.Millisecond
		case "auth_mechanism":
			var m Mechanism
			switch strings.ToLower(value) {
			case "plain":
				m = PlainAuth{Username: username, Password: password}
			case "amqplain":
				m = AMQPlainAuth{Username: username, Password: password}
			case "external":
				m = ExternalAuth{}
			default:
				return p.failf(part, "%s is not plain, amqplain or external", p.show(value))
			}
			c.SASL = append(c.SASL, m)
		case "connection_name":
			c.ConnectionName = value
		case "recovery_min_backoff", "recovery_max_backoff", "recovery_max_attempts", "recovery_attempt_timeout",
			"recovery_protocol_error_repeats", "recovery_fail_fast", "recovery_republish", "recovery_skip_topology":
			if rp.first == "" {
				rp.first = key
			}
			if err := p.recoveryParam(key, value, &rp.config); err != nil {
				return err
			}
		case "recovery":
			switch value {
			case "on":
				c.Recovery = &RecoveryConfig{}
			case "off":
				c.Recovery = nil
			default:
				return p.failf(part, "%s is not on or off", p.show(value))
			}
		default: // the TLS parameters
			if value == "" {
				return p.failf(part, "empty")
			}
			if tp.first == "" {
				tp.first = key
			}
			switch key {
			case "cacertfile":
				tp.caFile = value
			case "certfile":
				tp.certFile = value
			case "keyfile":
				tp.keyFile = value
			case "server_name_indication":
				if value == "disable" {
					return p.failf(part, "disabling SNI is not supported")
				}
				tp.serverName = value
			case "verify":
				switch value {
				case "verify_peer":
				case "verify_none":
					tp.verifyNone = true
				default:
					return p.failf(part, "%s is not verify_peer or verify_none", p.show(value))
				}
			}
		}
	}
	return nil
}

// recoveryParam sets the RecoveryConfig field of one recovery_ parameter.
func (p *urlParser) recoveryParam(key, value string, r *RecoveryConfig) error {
	part := "parameter " + key
	switch key {
	case "recovery_min_backoff", "recovery_max_backoff", "recovery_attempt_timeout":
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil || !isDigits(value) || n > math.MaxInt64/uint64(time.Millisecond) {
			return p.failf(part, "%s is not a whole number of milliseconds", p.show(value))
		}
		d := time.Duration(n) * time.Millisecond
		switch key {
		case "recovery_min_backoff":
			r.MinBackoff = d
		case "recovery_max_backoff":
			r.MaxBackoff = d
		default:
			r.AttemptTimeout = d
		}
	case "recovery_protocol_error_repeats":
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil || (value != "-1" && !isDigits(value)) {
			return p.failf(part, "%s is not a whole number from 0 to %d, or -1", p.show(value), math.MaxInt32)
		}
		r.ProtocolErrorRepeats = int(n)
	case "recovery_max_attempts":
		n, err := strconv.ParseUint(value, 10, 31)
		if err != nil || !isDigits(value) {
			return p.failf(part, "%s is not a whole number from 0 to %d", p.show(value), math.MaxInt32)
		}
		r.MaxAttempts = int(n)
	default:
		var b bool
		switch value {
		case "true":
			b = true
		case "false":
		default:
			return p.failf(part, "%s is not true or false", p.show(value))
		}
		switch key {
		case "recovery_fail_fast":
			r.FailFast = b
		case "recovery_republish":
			r.Republish = b
		default:
			r.SkipTopology = b
		}
	}
	return nil
}

// tlsConfig builds the TLS configuration of an amqps URL, reading the files
// its parameters name.
func (p *urlParser) tlsConfig(tp tlsParams) (*tls.Config, error) {
	t := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         tp.serverName,
		InsecureSkipVerify: tp.verifyNone, //nolint:gosec // asked for with verify=verify_none
	}
	if tp.caFile != "" {
		pem, err := os.ReadFile(tp.caFile)
		if err != nil {
			return nil, p.fail("parameter cacertfile", p.fileError(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, p.failf("parameter cacertfile", "no PEM certificate in %s", p.show(tp.caFile))
		}
		t.RootCAs = pool
	}
	switch {
	case tp.certFile != "" && tp.keyFile == "":
		return nil, p.failf("parameter certfile", "needs keyfile too")
	case tp.keyFile != "" && tp.certFile == "":
		return nil, p.failf("parameter keyfile", "needs certfile too")
	case tp.certFile != "":
		certPEM, err := os.ReadFile(tp.certFile)
		if err != nil {
			return nil, p.fail("parameter certfile", p.fileError(err))
		}
		keyPEM, err := os.ReadFile(tp.keyFile)
		if err != nil {
			return nil, p.fail("parameter keyfile", p.fileError(err))
		}
		// X509KeyPair's errors describe the problem, never the bytes.
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, p.fail("parameters certfile and keyfile",
				fmt.Errorf("%s and %s: %w", p.show(tp.certFile), p.show(tp.keyFile), err))
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// fileError is err from reading a file, without the path when values are hidden.
func (p *urlParser) fileError(err error) error {
	var pe *fs.PathError
	if p.quiet && errors.As(err, &pe) {
		return fmt.Errorf("%s %s: %w", pe.Op, p.show(pe.Path), pe.Err)
	}
	return err
}

// isScheme reports whether s has the syntax of a URL scheme (RFC 3986).
func isScheme(s string) bool {
	if s == "" || len(s) > 32 || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if b := s[i]; !isAlpha(b) && !isDigit(b) && b != '+' && b != '-' && b != '.' {
			return false
		}
	}
	return true
}

// isParamName reports whether s looks like a parameter name, which is then
// safe to repeat in an error.
func isParamName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; !isAlpha(b) && !isDigit(b) && b != '_' && b != '-' && b != '.' {
			return false
		}
	}
	return true
}

// isHostname reports whether s may be a host name or IPv4 address: letters,
// digits, '-', '.', '_', '~', and non-ASCII bytes for internationalized
// names. The empty string is allowed: it means localhost.
func isHostname(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !isAlpha(b) && !isDigit(b) && b != '-' && b != '.' && b != '_' && b != '~' && b < 0x80 {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

func isAlpha(b byte) bool { return 'a' <= b|0x20 && b|0x20 <= 'z' }
func isDigit(b byte) bool { return '0' <= b && b <= '9' }
