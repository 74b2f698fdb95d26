package amqptest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
)

// selfSigned returns a certificate for name, signed by itself.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, cert
}

// TestTLS authenticates the client engine with EXTERNAL and a client
// certificate over TLS, through Server.Dial.
func TestTLS(t *testing.T) {
	serverCert, serverLeaf := selfSigned(t, "broker.test")
	clientCert, clientLeaf := selfSigned(t, "alice")
	clientCAs, serverCAs := x509.NewCertPool(), x509.NewCertPool()
	clientCAs.AddCert(clientLeaf)
	serverCAs.AddCert(serverLeaf)

	srv := amqptest.NewServer(t, amqptest.Options{
		Mechanisms: "EXTERNAL PLAIN",
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientCAs,
		},
	})
	if !strings.HasPrefix(srv.URL(), "amqps://") {
		t.Errorf("URL() = %q", srv.URL())
	}
	conn, err := amqp.DialConfig(t.Context(), amqp.Config{
		Addrs: []string{"broker.test"},
		Dial:  srv.Dial,
		TLS:   &tls.Config{RootCAs: serverCAs, Certificates: []tls.Certificate{clientCert}},
		SASL:  []amqp.Mechanism{amqp.ExternalAuth{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sc := accept(t, srv)
	if so := sc.StartOk(); so.Mechanism != "EXTERNAL" || so.Response != "" {
		t.Errorf("start-ok = %+v", so)
	}
	tc, ok := sc.NetConn().(*tls.Conn)
	if !ok {
		t.Fatalf("NetConn() is a %T", sc.NetConn())
	}
	if peer := tc.ConnectionState().PeerCertificates; len(peer) != 1 || peer[0].Subject.CommonName != "alice" {
		t.Errorf("client certificate = %v", peer)
	}
	go sc.Serve(t.Context(), nil)
	if err := conn.Close(t.Context()); err != nil {
		t.Errorf("Close: %v", err)
	}
}
