package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a throwaway certificate authority for tests: an ECDSA P-256 key and a
// self-signed CA certificate valid for a day. It issues server and client
// certificates. Nothing here is fit for production use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

// NewCA creates a certificate authority whose certificate has the given
// common name.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("brokertest: CA key: %w", err)
	}
	tmpl, err := certTemplate(commonName)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("brokertest: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("brokertest: CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, der: der}, nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}

// CertPool returns a pool holding only this CA, for tls.Config.RootCAs.
func (ca *CA) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// Certificate is a certificate issued by a [CA], with its private key, in
// PEM form.
type Certificate struct {
	CertPEM []byte // the certificate
	KeyPEM  []byte // its unencrypted private key (SEC 1 "EC PRIVATE KEY")
}

// TLSCertificate returns the certificate as a tls.Certificate, for
// tls.Config.Certificates.
func (c Certificate) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(c.CertPEM, c.KeyPEM)
}

// IssueServer issues a server certificate (extended key usage serverAuth)
// for the given DNS names and IP addresses; the first DNS name is also its
// common name.
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP) (Certificate, error) {
	cn := "server"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	return ca.issue(cn, x509.ExtKeyUsageServerAuth, func(t *x509.Certificate) {
		t.DNSNames, t.IPAddresses = dnsNames, ips
	})
}

// IssueClient issues a client certificate (extended key usage clientAuth)
// with the given common name. A RabbitMQ node with ssl_cert_login_from =
// common_name logs a client presenting it in as that user with SASL EXTERNAL.
func (ca *CA) IssueClient(commonName string) (Certificate, error) {
	return ca.issue(commonName, x509.ExtKeyUsageClientAuth, nil)
}

func (ca *CA) issue(commonName string, usage x509.ExtKeyUsage, edit func(*x509.Certificate)) (Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Certificate{}, fmt.Errorf("brokertest: key for %q: %w", commonName, err)
	}
	tmpl, err := certTemplate(commonName)
	if err != nil {
		return Certificate{}, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Certificate{}, fmt.Errorf("brokertest: certificate for %q: %w", commonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Certificate{}, fmt.Errorf("brokertest: key for %q: %w", commonName, err)
	}
	return Certificate{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func certTemplate(commonName string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("brokertest: serial number: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"brokertest"}},
		NotBefore:    now.Add(-time.Hour), // tolerate a little clock skew
		NotAfter:     now.Add(24 * time.Hour),
	}, nil
}

// TLSFiles are the PEM files of a TLS node: the CA that signed both sides,
// the server's certificate and key (used by the node), and a client
// certificate with CN=guest and its key (for the client, for example in the
// cacertfile, certfile and keyfile URL parameters).
type TLSFiles struct {
	CACert     string
	ServerCert string
	ServerKey  string
	ClientCert string
	ClientKey  string

	ca     *CA
	client Certificate
}

// CA returns the certificate authority that signed the node's and the
// client's certificates.
func (f *TLSFiles) CA() *CA { return f.ca }

// ClientConfig returns a TLS configuration that trusts the node's CA and
// presents the CN=guest client certificate, for amqp.Config.TLS. Each call
// returns a new value.
func (f *TLSFiles) ClientConfig() *tls.Config {
	cert, err := f.client.TLSCertificate()
	if err != nil {
		panic("brokertest: client certificate generated unusable: " + err.Error()) // cannot happen
	}
	return &tls.Config{RootCAs: f.ca.CertPool(), Certificates: []tls.Certificate{cert}}
}

// writeTLSFiles generates a CA, a server certificate for localhost,
// 127.0.0.1 and ::1, and a CN=guest client certificate, and writes them to dir.
func writeTLSFiles(dir string) (*TLSFiles, error) {
	ca, err := NewCA("brokertest CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return nil, err
	}
	client, err := ca.IssueClient("guest")
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{
		CACert:     filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client.key"),
		ca:         ca,
		client:     client,
	}
	for path, data := range map[string][]byte{
		f.CACert:     ca.CertPEM(),
		f.ServerCert: server.CertPEM,
		f.ServerKey:  server.KeyPEM,
		f.ClientCert: client.CertPEM,
		f.ClientKey:  client.KeyPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("brokertest: %w", err)
		}
	}
	return f, nil
}
