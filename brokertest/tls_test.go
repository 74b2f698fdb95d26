package brokertest_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/brokertest"
	"github.com/stretchr/testify/require"
)

// TestTLS connects to the shared node's AMQPS listener, which verifies
// client certificates when given (verify_peer, fail_if_no_peer_cert =
// false) and offers EXTERNAL, taking the user from the certificate's CN.
func TestTLS(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	files := node.TLS()
	require.NotNil(t, files)

	t.Run("ExternalAuthWithClientCertificate", func(t *testing.T) {
		name := uniqueName(t)
		conn := dial(t, amqp.Config{
			Addrs:          []string{node.TLSAddr()},
			SASL:           []amqp.Mechanism{amqp.ExternalAuth{}},
			TLS:            &tls.Config{RootCAs: files.CA().CertPool(), Certificates: node.ClientTLSConfig().Certificates},
			ConnectionName: name,
		})
		roundTrip(t, conn, "over TLS with EXTERNAL")
		requireServerSees(t, node, name, "true", "EXTERNAL", "guest")
	})

	t.Run("ExternalAuthFromURLParameters", func(t *testing.T) {
		name := uniqueName(t)
		q := url.Values{}
		q.Set("cacertfile", files.CACert)
		q.Set("certfile", files.ClientCert)
		q.Set("keyfile", files.ClientKey)
		q.Set("auth_mechanism", "external")
		q.Set("connection_name", name)
		cfg, err := amqp.ParseURL(node.TLSURL() + "?" + q.Encode())
		require.NoError(t, err)
		conn := dial(t, cfg)
		roundTrip(t, conn, "over TLS with EXTERNAL, configured by URL")
		requireServerSees(t, node, name, "true", "EXTERNAL", "guest")
	})

	t.Run("PlainAuthWithoutClientCertificate", func(t *testing.T) {
		name := uniqueName(t)
		conn := dial(t, amqp.Config{
			Addrs:          []string{node.TLSAddr()},
			TLS:            &tls.Config{RootCAs: files.CA().CertPool()},
			ConnectionName: name,
		})
		roundTrip(t, conn, "over TLS with PLAIN")
		requireServerSees(t, node, name, "true", "PLAIN", "guest")
	})

	t.Run("UntrustedServerCertificate", func(t *testing.T) {
		other, err := brokertest.NewCA("another CA")
		require.NoError(t, err)
		for name, roots := range map[string]*x509.CertPool{"another CA": other.CertPool(), "system roots": nil} {
			start := time.Now()
			_, err := amqp.DialConfig(ctxFor(t, 30*time.Second), amqp.Config{
				Addrs: []string{node.TLSAddr()},
				TLS:   &tls.Config{RootCAs: roots, Certificates: node.ClientTLSConfig().Certificates},
			})
			t.Logf("%s: %v after %v", name, err, time.Since(start))
			var unknown x509.UnknownAuthorityError
			require.ErrorAs(t, err, &unknown, name)
			require.Less(t, time.Since(start), 10*time.Second, name)
		}
	})

	t.Run("ClientCertificateFromUnknownCA", func(t *testing.T) {
		other, err := brokertest.NewCA("another CA")
		require.NoError(t, err)
		cert, err := other.IssueClient("guest")
		require.NoError(t, err)
		tlsCert, err := cert.TLSCertificate()
		require.NoError(t, err)
		start := time.Now()
		_, err = amqp.DialConfig(ctxFor(t, 30*time.Second), amqp.Config{
			Addrs: []string{node.TLSAddr()},
			SASL:  []amqp.Mechanism{amqp.ExternalAuth{}},
			TLS: &tls.Config{
				RootCAs: files.CA().CertPool(),
				// Given in Certificates, crypto/tls would not send a
				// certificate the server's request says it cannot verify
				// (the server would then see none, as in the next test).
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return &tlsCert, nil
				},
			},
		})
		t.Logf("%v after %v", err, time.Since(start))
		// With TLS 1.3 the server checks the client certificate after the
		// client finished its handshake: it sends an unknown_ca alert and
		// closes. The client sees the alert, or, when its first write
		// (the AMQP protocol header) races the close, a reset.
		// (crypto/tls reports a received alert as a *net.OpError with Op
		// "remote error".)
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "remote error" {
			require.Contains(t, opErr.Err.Error(), "unknown certificate authority")
		} else {
			require.ErrorIs(t, err, syscall.ECONNRESET, "the server rejects the certificate: a TLS alert or a reset")
		}
		var amqpErr *amqp.Error
		require.False(t, errors.As(err, &amqpErr), "the AMQP handshake never started")
		require.Less(t, time.Since(start), 10*time.Second)
	})

	t.Run("ExternalAuthWithoutClientCertificate", func(t *testing.T) {
		start := time.Now()
		_, err := amqp.DialConfig(ctxFor(t, 30*time.Second), amqp.Config{
			Addrs: []string{node.TLSAddr()},
			SASL:  []amqp.Mechanism{amqp.ExternalAuth{}},
			TLS:   &tls.Config{RootCAs: files.CA().CertPool()},
		})
		elapsed := time.Since(start)
		t.Logf("%v after %v", err, elapsed)
		require.ErrorIs(t, err, amqp.ErrAccessRefused)
		var amqpErr *amqp.Error
		require.ErrorAs(t, err, &amqpErr)
		require.True(t, amqpErr.Server)
		require.False(t, amqp.Recoverable(err), "no certificate stays no certificate")
		// RabbitMQ delays its answer to a failed login (about 3 s).
		require.Less(t, elapsed, 15*time.Second)
	})
}

// requireServerSees checks, with rabbitmqctl, how the server sees the
// connection named name: whether it uses TLS, the SASL mechanism, and the user.
func requireServerSees(t *testing.T, node *brokertest.Node, name, ssl, mechanism, user string) {
	t.Helper()
	out, err := node.Ctl("-q", "list_connections", "--no-table-headers", "ssl", "auth_mechanism", "user", "client_properties")
	require.NoError(t, err)
	for line := range strings.Lines(out) {
		if strings.Contains(line, `"`+name+`"`) {
			fields := strings.Split(line, "\t")
			require.GreaterOrEqual(t, len(fields), 3, line)
			require.Equal(t, []string{ssl, mechanism, user}, fields[:3], "ssl, auth_mechanism, user")
			return
		}
	}
	t.Fatalf("no connection named %q on the server:\n%s", name, out)
}
