package amqp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url  string
		want Config
	}{
		// Defaults: what the URL leaves out stays zero, which means the default.
		{"amqp://", Config{}},
		{"amqp:///", Config{}},
		{"amqp://localhost", Config{Addrs: []string{"localhost:5672"}}},
		{"AMQP://Rabbit.Example.com", Config{Addrs: []string{"Rabbit.Example.com:5672"}}},
		{"amqp://host:1234", Config{Addrs: []string{"host:1234"}}},
		{"amqp://host:", Config{Addrs: []string{"host:5672"}}},
		{"amqp://:5673", Config{Addrs: []string{"localhost:5673"}}},
		{"amqp://10.1.2.3:5673", Config{Addrs: []string{"10.1.2.3:5673"}}},
		{"amqp://h_1.example-2~x", Config{Addrs: []string{"h_1.example-2~x:5672"}}},

		// IPv6.
		{"amqp://[::1]", Config{Addrs: []string{"[::1]:5672"}}},
		{"amqp://[::1]:5673/", Config{Addrs: []string{"[::1]:5673"}}},
		{"amqp://[2001:db8::7]:1", Config{Addrs: []string{"[2001:db8::7]:1"}}},
		{"amqp://[fe80::1%25eth0]:5672", Config{Addrs: []string{"[fe80::1%eth0]:5672"}}},

		// Several hosts.
		{"amqp://user:pass@h1:5672,h2:5673,h3/vhost", Config{
			Addrs: []string{"h1:5672", "h2:5673", "h3:5672"}, Username: "user", Password: "pass", Vhost: "vhost"}},
		{"amqp://h1,[::1]:6000,[::2],:7000", Config{
			Addrs: []string{"h1:5672", "[::1]:6000", "[::2]:5672", "localhost:7000"}}},

		// Userinfo.
		{"amqp://user:pass@host", Config{Addrs: []string{"host:5672"}, Username: "user", Password: "pass"}},
		{"amqp://us%40er:p%3Ass@host/%2F", Config{Addrs: []string{"host:5672"}, Username: "us@er", Password: "p:ss", Vhost: "/"}},
		{"amqp://user@host", Config{Addrs: []string{"host:5672"}, Username: "user"}},
		{"amqp://:pass@host", Config{Addrs: []string{"host:5672"}, Password: "pass"}},
		{"amqp://user:@host", Config{Addrs: []string{"host:5672"}, Username: "user"}},
		{"amqp://@host", Config{Addrs: []string{"host:5672"}}},
		{"amqp://user:a:b@host", Config{Addrs: []string{"host:5672"}, Username: "user", Password: "a:b"}},
		{"amqp://user:p@ss@host", Config{Addrs: []string{"host:5672"}, Username: "user", Password: "p@ss"}},
		{"amqp://user:p%2Fs%3Fs%23@host", Config{Addrs: []string{"host:5672"}, Username: "user", Password: "p/s?s#"}},
		{"amqp://user:p+s,s!$&'()*;=@host", Config{Addrs: []string{"host:5672"}, Username: "user", Password: "p+s,s!$&'()*;="}},
		{"amqp://user:pass@", Config{Username: "user", Password: "pass"}},

		// Vhost.
		{"amqp://host/", Config{Addrs: []string{"host:5672"}}},
		{"amqp://host/%2F", Config{Addrs: []string{"host:5672"}, Vhost: "/"}},
		{"amqp://host/%2f", Config{Addrs: []string{"host:5672"}, Vhost: "/"}},
		{"amqp://host/vh", Config{Addrs: []string{"host:5672"}, Vhost: "vh"}},
		{"amqp://host/a%2Fb", Config{Addrs: []string{"host:5672"}, Vhost: "a/b"}},
		{"amqp://host/a%20b+c", Config{Addrs: []string{"host:5672"}, Vhost: "a b+c"}},
		{"amqp://host/%40x?heartbeat=5", Config{Addrs: []string{"host:5672"}, Vhost: "@x", Heartbeat: 5 * time.Second}},
		{"amqp://u@host/vh@x", Config{Addrs: []string{"host:5672"}, Username: "u", Vhost: "vh@x"}},

		// Query parameters.
		{"amqp://host?heartbeat=10", Config{Addrs: []string{"host:5672"}, Heartbeat: 10 * time.Second}},
		{"amqp://host?heartbeat=0", Config{Addrs: []string{"host:5672"}, Heartbeat: -1}},
		{"amqp://host?heartbeat=65535", Config{Addrs: []string{"host:5672"}, Heartbeat: 65535 * time.Second}},
		{"amqp://?frame_max=8192", Config{FrameMax: 8192}},
		{"amqp://?frame_max=0", Config{}},
		{"amqp://?frame_max=4294967295", Config{FrameMax: 4294967295}},
		{"amqp://?channel_max=100", Config{ChannelMax: 100}},
		{"amqp://?channel_max=0", Config{}},
		{"amqp://?connection_timeout=1500", Config{ConnectionTimeout: 1500 * time.Millisecond}},
		{"amqp://?connection_timeout=0", Config{}},
		{"amqp://?connection_name=my%20app", Config{ConnectionName: "my app"}},
		{"amqp://?connection_name=a+b%2Bc@d", Config{ConnectionName: "a b+c@d"}},
		{"amqp://?connection_name=", Config{}},
		{"amqp://?recovery=on", Config{Recovery: &RecoveryConfig{}}},
		{"amqp://?recovery=off", Config{}},
		{"amqp://?recovery_republish=true&recovery=on", Config{Recovery: &RecoveryConfig{Republish: true}}},
		{"amqp://?recovery=on&recovery_min_backoff=250&recovery_max_backoff=30000&recovery_max_attempts=12" +
			"&recovery_attempt_timeout=1500&recovery_protocol_error_repeats=5" +
			"&recovery_fail_fast=true&recovery_republish=true&recovery_skip_topology=true", Config{Recovery: &RecoveryConfig{
			MinBackoff: 250 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxAttempts: 12,
			AttemptTimeout: 1500 * time.Millisecond, ProtocolErrorRepeats: 5,
			FailFast: true, Republish: true, SkipTopology: true}}},
		{"amqp://?recovery=on&recovery_protocol_error_repeats=-1", Config{Recovery: &RecoveryConfig{ProtocolErrorRepeats: -1}}},
		{"amqp://?recovery=on&recovery_fail_fast=false&recovery_max_attempts=0&recovery_min_backoff=0", Config{Recovery: &RecoveryConfig{}}},
		{"amqp://?auth_mechanism=external", Config{SASL: []Mechanism{ExternalAuth{}}}},
		{"amqp://?auth_mechanism=PLAIN", Config{SASL: []Mechanism{PlainAuth{Username: "guest", Password: "guest"}}}},
		{"amqp://bob:pw@h?auth_mechanism=amqplain&auth_mechanism=plain&auth_mechanism=External", Config{
			Addrs: []string{"h:5672"}, Username: "bob", Password: "pw",
			SASL: []Mechanism{AMQPlainAuth{Username: "bob", Password: "pw"}, PlainAuth{Username: "bob", Password: "pw"}, ExternalAuth{}}}},
		{"amqp://bob@h?auth_mechanism=plain", Config{
			Addrs: []string{"h:5672"}, Username: "bob", SASL: []Mechanism{PlainAuth{Username: "bob"}}}},
		{"amqp://h/v?&heartbeat=5&&channel_max=9&", Config{
			Addrs: []string{"h:5672"}, Vhost: "v", Heartbeat: 5 * time.Second, ChannelMax: 9}},
		{"amqp://u:p@h1,h2:1/%2Fv?heartbeat=1&frame_max=4096&channel_max=2&connection_timeout=3&connection_name=n&auth_mechanism=plain", Config{
			Addrs: []string{"h1:5672", "h2:1"}, Username: "u", Password: "p", Vhost: "/v",
			Heartbeat: time.Second, FrameMax: 4096, ChannelMax: 2, ConnectionTimeout: 3 * time.Millisecond,
			ConnectionName: "n", SASL: []Mechanism{PlainAuth{Username: "u", Password: "p"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got, err := ParseURL(tc.url)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseURLTLSDefaults(t *testing.T) {
	tests := []struct {
		url        string
		addrs      []string
		serverName string
		insecure   bool
	}{
		{"amqps://", nil, "", false},
		{"amqps://host", []string{"host:5671"}, "", false},
		{"AMQPS://host:1", []string{"host:1"}, "", false},
		{"amqps://h1,h2:2", []string{"h1:5671", "h2:2"}, "", false},
		{"amqps://[::1]", []string{"[::1]:5671"}, "", false},
		{"amqps://10.0.0.1?server_name_indication=rabbit.example.com", []string{"10.0.0.1:5671"}, "rabbit.example.com", false},
		{"amqps://host?verify=verify_peer", []string{"host:5671"}, "", false},
		{"amqps://host?verify=verify_none", []string{"host:5671"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			c, err := ParseURL(tc.url)
			require.NoError(t, err)
			require.Equal(t, tc.addrs, c.Addrs)
			require.NotNil(t, c.TLS)
			require.Equal(t, uint16(tls.VersionTLS12), c.TLS.MinVersion)
			require.Equal(t, tc.serverName, c.TLS.ServerName)
			require.Equal(t, tc.insecure, c.TLS.InsecureSkipVerify)
			require.Nil(t, c.TLS.RootCAs, "the system roots")
			require.Empty(t, c.TLS.Certificates)

			d, err := c.withDefaults()
			require.NoError(t, err)
			if tc.addrs == nil {
				require.Equal(t, []string{"localhost:5671"}, d.Addrs)
			}
		})
	}
}

// testPKI writes a CA, a server certificate for localhost and 127.0.0.1 and
// a client certificate for "guest" into dir, all PEM, and returns the CA.
func testPKI(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	write := func(name, typ string, der []byte) {
		f, err := os.Create(filepath.Join(dir, name))
		require.NoError(t, err)
		require.NoError(t, pem.Encode(f, &pem.Block{Type: typ, Bytes: der}))
		require.NoError(t, f.Close())
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		write(name, "PRIVATE KEY", der)
	}
	now := time.Now()

	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	write("ca.pem", "CERTIFICATE", caDER)
	writeKey("ca.key", caKey)

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, dns []string, ips []net.IP, name string) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		require.NoError(t, err)
		write(name+".pem", "CERTIFICATE", der)
		writeKey(name+".key", k)
	}
	issue(2, "localhost", x509.ExtKeyUsageServerAuth, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, "server")
	issue(3, "guest", x509.ExtKeyUsageClientAuth, nil, nil, "client")
	return ca
}

// tlsServer accepts TLS connections that must present a client certificate
// issued by ca, and reports each handshake's client common name or error.
func tlsServer(t *testing.T, dir string, ca *x509.Certificate) (addr string, results <-chan string) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				ch <- "error: " + err.Error()
			} else {
				ch <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			tc.Close()
		}
	}()
	return ln.Addr().String(), ch
}

func TestParseURLTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testPKI(t, dir)
	addr, results := tlsServer(t, dir, ca)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	file := func(name string) string { return url.QueryEscape(filepath.Join(dir, name)) }

	// handshake dials the first address of c with its TLS configuration,
	// as the connection does, and returns the client's error, if any.
	handshake := func(t *testing.T, c Config) error {
		t.Helper()
		d, err := c.withDefaults()
		require.NoError(t, err)
		conn, err := d.Dial(t.Context(), "tcp", d.Addrs[0])
		require.NoError(t, err)
		defer conn.Close()
		tc := tls.Client(conn, d.tlsConfigFor(d.Addrs[0]))
		err = tc.HandshakeContext(t.Context())
		if err == nil {
			// TLS 1.3 reports a rejected client certificate on the first read.
			_, err = tc.Read(make([]byte, 1))
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		return err
	}

	for _, host := range []string{"localhost", "127.0.0.1"} {
		t.Run("verified client certificate via "+host, func(t *testing.T) {
			u := "amqps://" + host + ":" + port + "?cacertfile=" + file("ca.pem") +
				"&certfile=" + file("client.pem") + "&keyfile=" + file("client.key")
			c, err := ParseURL(u)
			require.NoError(t, err)
			require.NotNil(t, c.TLS.RootCAs)
			require.Len(t, c.TLS.Certificates, 1)
			require.NoError(t, handshake(t, c))
			require.Equal(t, "guest", <-results)
		})
	}

	t.Run("server name indication", func(t *testing.T) {
		u := "amqps://127.0.0.1:" + port + "?cacertfile=" + file("ca.pem") +
			"&certfile=" + file("client.pem") + "&keyfile=" + file("client.key") + "&server_name_indication=localhost"
		c, err := ParseURL(u)
		require.NoError(t, err)
		require.NoError(t, handshake(t, c))
		require.Equal(t, "guest", <-results)

		c, err = ParseURL(strings.Replace(u, "=localhost", "=other.example", 1))
		require.NoError(t, err)
		require.ErrorContains(t, handshake(t, c), "other.example")
		<-results
	})

	t.Run("system roots do not trust the test CA", func(t *testing.T) {
		c, err := ParseURL("amqps://localhost:" + port + "?certfile=" + file("client.pem") + "&keyfile=" + file("client.key"))
		require.NoError(t, err)
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, handshake(t, c), &unknown)
		<-results
	})

	t.Run("verify_none skips verification", func(t *testing.T) {
		c, err := ParseURL("amqps://localhost:" + port + "?verify=verify_none&certfile=" + file("client.pem") + "&keyfile=" + file("client.key"))
		require.NoError(t, err)
		require.NoError(t, handshake(t, c))
		require.Equal(t, "guest", <-results)
	})

	t.Run("the server refuses a missing client certificate", func(t *testing.T) {
		c, err := ParseURL("amqps://localhost:" + port + "?cacertfile=" + file("ca.pem"))
		require.NoError(t, err)
		require.Error(t, handshake(t, c))
		require.Contains(t, <-results, "error:")
	})
}

func TestParseURLErrors(t *testing.T) {
	dir := t.TempDir()
	testPKI(t, dir)
	file := func(name string) string { return url.QueryEscape(filepath.Join(dir, name)) }
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("Hunter2Secret is not PEM"), 0o600))

	const pw = "Hunter2Secret"
	base := "amqp://bob:" + pw + "@host"
	tlsBase := "amqps://bob:" + pw + "@host"
	tests := []struct {
		url     string
		part    string
		wantErr string // a substring of the message
	}{
		{"", "scheme", `does not start with "amqp://" or "amqps://"`},
		{"bob:" + pw + "@host", "scheme", `does not start with "amqp://"`},
		{"http://bob:" + pw + "@host", "scheme", `"http" is not amqp or amqps`},
		{"amqp:/bob:" + pw + "@host", "scheme", `does not start with`},
		{"bob:" + pw + "://host", "scheme", `does not start with`},
		{base + " /vh", "URL", "a space or control character at byte 29"},
		{base + "\n", "URL", "a space or control character"},
		{"amqp://bob:" + pw + "\x00@host", "URL", "a space or control character"},

		{"amqp://b%zzob:" + pw + "@host", "username", "invalid percent-encoding"},
		{"amqp://bob:" + pw + "%zz@host", "password", "invalid percent-encoding"},
		{"amqp://bob:" + pw + "%2@host", "password", "invalid percent-encoding"},

		{base + ":99999", "port", `"99999" is not a port number from 1 to 65535`},
		{base + ":0", "port", `"0" is not a port number`},
		{base + ":abc", "port", `"abc" is not a port number`},
		{base + ":+1", "port", `"+1" is not a port number`},
		{base + ",h2:70000", "port", `"70000"`},
		{"amqp://bob:" + pw + "@::1", "host", `an IPv6 address goes in brackets`},
		{"amqp://bob:" + pw + "@[::1", "host", `lacks the ']'`},
		{"amqp://bob:" + pw + "@[::1]x", "host", `"x" after an IPv6 address`},
		{"amqp://bob:" + pw + "@[::1]:", "port", ``}, // an empty port after ':' is the default port; see below
		{"amqp://bob:" + pw + "@[nothost]", "host", `"[nothost]" is not an IPv6 address`},
		{"amqp://bob:" + pw + "@[127.0.0.1]", "host", `is not an IPv6 address`},
		{base + ",,h2", "host", `an empty entry in the host list "host,,h2"`},
		{base + ",", "host", `an empty entry`},
		{"amqp://bob:" + pw + "@ho$t", "host", `"ho$t" is not a host name or address`},
		{"amqp://bob:" + pw + "@ho%zzt", "host", `"ho%zzt" is not a host name`},

		{base + "/a/b", "vhost", `the path "/a/b" has more than one segment`},
		{base + "/vh/", "vhost", `more than one segment`},
		{base + "//", "vhost", `more than one segment`},
		{base + "/a%zz", "vhost", `invalid percent-encoding in "a%zz"`},
		{base + "/" + strings.Repeat("v", 256), "vhost", "256 bytes long; the maximum is 255"},
		{base + "/#frag", "fragment", "an AMQP URL has no fragment"},
		{base + "#", "fragment", "no fragment"},

		{base + "?heartbeat=abc", "parameter heartbeat", `"abc" is not a whole number of seconds from 0 to 65535`},
		{base + "?heartbeat=-1", "parameter heartbeat", `"-1" is not a whole number`},
		{base + "?heartbeat=65536", "parameter heartbeat", `"65536"`},
		{base + "?heartbeat=", "parameter heartbeat", `"" is not a whole number`},
		{base + "?heartbeat=%zz", "parameter heartbeat", `invalid percent-encoding in the value`},
		{base + "?heartbeat=1&heartbeat=2", "parameter heartbeat", "given more than once"},
		{base + "?frame_max=100", "parameter frame_max", `"100" is below the protocol minimum 4096`},
		{base + "?frame_max=4294967296", "parameter frame_max", `"4294967296" is not a number of bytes from 4096 to 4294967295, or 0`},
		{base + "?channel_max=65536", "parameter channel_max", `"65536" is not a number from 0 to 65535`},
		{base + "?connection_timeout=1.5", "parameter connection_timeout", `"1.5" is not a whole number of milliseconds`},
		{base + "?connection_timeout=-5", "parameter connection_timeout", `"-5"`},
		{base + "?connection_timeout=99999999999999999", "parameter connection_timeout", `"99999999999999999"`},
		{base + "?auth_mechanism=scram-sha-256", "parameter auth_mechanism", `"scram-sha-256" is not plain, amqplain or external`},
		{base + "?connection_name=a&connection_name=b", "parameter connection_name", "given more than once"},
		{base + "?recovery=yes", "parameter recovery", "is not on or off"},
		{base + "?recovery_republish=true", "parameter recovery_republish", "tunes recovery, which needs recovery=on"},
		{base + "?recovery=off&recovery_max_attempts=3", "parameter recovery_max_attempts", "needs recovery=on"},
		{base + "?recovery=on&recovery_republish=yes", "parameter recovery_republish", `"yes" is not true or false`},
		{base + "?recovery=on&recovery_min_backoff=1s", "parameter recovery_min_backoff", `"1s" is not a whole number of milliseconds`},
		{base + "?recovery=on&recovery_max_backoff=-1", "parameter recovery_max_backoff", `"-1" is not a whole number of milliseconds`},
		{base + "?recovery=on&recovery_max_attempts=2147483648", "parameter recovery_max_attempts", `"2147483648" is not a whole number from 0 to 2147483647`},
		{base + "?recovery=on&recovery_attempt_timeout=5s", "parameter recovery_attempt_timeout", `"5s" is not a whole number of milliseconds`},
		{base + "?recovery=on&recovery_protocol_error_repeats=-2", "parameter recovery_protocol_error_repeats", `"-2" is not a whole number from 0 to 2147483647, or -1`},
		{base + "?recovery=on&recovery_protocol_error_repeats=%2B3", "parameter recovery_protocol_error_repeats", `"+3" is not a whole number`},
		{base + "?recovery=on&recovery_fail_fast=true&recovery_fail_fast=true", "parameter recovery_fail_fast", "given more than once"},
		{base + "?foo=bar", "query", `unknown parameter "foo"; the parameters are heartbeat, frame_max, channel_max`},
		{base + "?Heartbeat=5", "query", `unknown parameter "Heartbeat"`},
		{base + "?f%C3%B6%3D=1", "query", `an unknown parameter;`},
		{base + "?%zz=1", "query", "invalid percent-encoding in a parameter name"},
		{base + "?depth=3", "parameter depth", "an option of RabbitMQ's Erlang client that this client does not support"},
		{base + "?password=" + pw, "parameter password", "does not support"},
		{base + "?fail_if_no_peer_cert=true", "parameter fail_if_no_peer_cert", "does not support"},

		{base + "?cacertfile=" + file("ca.pem"), "parameter cacertfile", "a TLS option, which needs the amqps scheme"},
		{base + "?heartbeat=5&verify=verify_none&certfile=x", "parameter verify", "needs the amqps scheme"},
		{base + "?server_name_indication=h", "parameter server_name_indication", "needs the amqps scheme"},
		{tlsBase + "?cacertfile=", "parameter cacertfile", "empty"},
		{tlsBase + "?cacertfile=" + file("missing.pem"), "parameter cacertfile", "missing.pem: no such file or directory"},
		{tlsBase + "?cacertfile=" + url.QueryEscape(notPEM), "parameter cacertfile", `no PEM certificate in "` + notPEM + `"`},
		{tlsBase + "?certfile=" + file("client.pem"), "parameter certfile", "needs keyfile too"},
		{tlsBase + "?keyfile=" + file("client.key"), "parameter keyfile", "needs certfile too"},
		{tlsBase + "?certfile=" + file("missing.pem") + "&keyfile=" + file("client.key"), "parameter certfile", "missing.pem"},
		{tlsBase + "?certfile=" + file("client.pem") + "&keyfile=" + file("missing.key"), "parameter keyfile", "missing.key"},
		{tlsBase + "?certfile=" + file("client.pem") + "&keyfile=" + file("server.key"), "parameters certfile and keyfile", "private key does not match public key"},
		{tlsBase + "?certfile=" + url.QueryEscape(notPEM) + "&keyfile=" + file("client.key"), "parameters certfile and keyfile", "not.pem"},
		{tlsBase + "?certfile=" + file("client.key") + "&keyfile=" + file("client.pem"), "parameters certfile and keyfile", "client.key"},
		{tlsBase + "?verify=verify_maybe", "parameter verify", `"verify_maybe" is not verify_peer or verify_none`},
		{tlsBase + "?server_name_indication=disable", "parameter server_name_indication", "disabling SNI is not supported"},
		{tlsBase + "?verify=verify_none&verify=verify_peer", "parameter verify", "given more than once"},
	}
	for _, tc := range tests {
		if tc.wantErr == "" {
			continue
		}
		t.Run(tc.url, func(t *testing.T) {
			c, err := ParseURL(tc.url)
			require.Error(t, err)
			require.Equal(t, Config{}, c)
			var ue *URLError
			require.ErrorAs(t, err, &ue)
			require.Equal(t, tc.part, ue.Part)
			require.ErrorContains(t, err, "amqp: invalid URL: "+tc.part+": ")
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), pw, "the password must never be in an error")
			require.NotContains(t, err.Error(), "Hunter2", "nor a piece of it")
			require.NotContains(t, err.Error(), "Secret")
		})
	}

	// An empty port after ':' is the default, as RFC 3986 allows.
	c, err := ParseURL("amqp://bob:" + pw + "@[::1]:")
	require.NoError(t, err)
	require.Equal(t, []string{"[::1]:5672"}, c.Addrs)

	_, err = ParseURL(tlsBase + "?cacertfile=" + file("missing.pem"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

// TestParseURLUnencodedPassword covers passwords whose '/', '?' or '#' were
// not percent-encoded: the URL then splits inside the password, so no error
// may show any value, which could be a piece of it.
func TestParseURLUnencodedPassword(t *testing.T) {
	tests := []struct {
		url     string
		part    string
		secrets []string // pieces of the password that must not appear
	}{
		{"amqp://user:Zq9/Xk7@host/vh", "userinfo", []string{"Zq9", "Xk7"}},        // base64-style '/'
		{"amqp://user:Zq9/Xk7@host", "userinfo", []string{"Zq9", "Xk7"}},           // no vhost
		{"amqp://user:5999/Xk7@host:5672/vh", "userinfo", []string{"5999", "Xk7"}}, // the piece looks like a port
		{"amqp://user:Zq9?Xk7@host", "port", []string{"Zq9", "Xk7"}},               // "Zq9" parsed as a port
		{"amqp://user:5999?heartbeat=Xk7@host", "parameter heartbeat", []string{"5999", "Xk7"}},
		{"amqp://user:5999?Xk7=1@host", "query", []string{"5999", "Xk7"}}, // an unknown parameter
		{"amqp://user:5999?Xk7@host", "query", []string{"5999", "Xk7"}},
		{"amqp://user:Zq9#Xk7@host", "fragment", []string{"Zq9", "Xk7"}},
		{"amqp://user:5999#Xk7@host", "fragment", []string{"5999", "Xk7"}},
		{"amqp://Zq9:5999?%zz@host", "query", []string{"Zq9", "5999"}},
		{"amqps://user:5999?cacertfile=/nonexistent/Xk7@host", "parameter cacertfile", []string{"5999", "Xk7", "nonexistent"}},
		{"amqps://user:5999?certfile=/Xk7@host", "parameter certfile", []string{"5999", "Xk7"}},
		{"amqp://user:5999?cacertfile=/Xk7@host", "parameter cacertfile", []string{"5999", "Xk7"}},
		{"amqp://us,er:Zq9/Xk7@host", "userinfo", []string{"Zq9", "Xk7", "us,er"}},
		{"amqp://[Zq9?x@host", "host", []string{"Zq9"}},
		// A raw '@' in the vhost is valid RFC 3986 but indistinguishable
		// from a password's unencoded '/': it must be written %40.
		{"amqp://host/vh@Xk7", "userinfo", []string{"Xk7"}},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			_, err := ParseURL(tc.url)
			var ue *URLError
			require.ErrorAs(t, err, &ue)
			require.Equal(t, tc.part, ue.Part, err.Error())
			for _, s := range tc.secrets {
				require.NotContains(t, err.Error(), s)
			}
			require.Contains(t, err.Error(), "%2F", "the message says what to do")
		})
	}
}

func TestURLError(t *testing.T) {
	inner := errors.New("boom")
	e := &URLError{Part: "port", Err: inner}
	require.Equal(t, "amqp: invalid URL: port: boom", e.Error())
	require.ErrorIs(t, e, inner)
}
