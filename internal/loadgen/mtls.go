package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"time"
)

// The mTLS baseline is what people deploy today for device
// authentication: TLS 1.3 with client certificates, ECDSA P-256
// certificates issued by one CA, X25519 key exchange, and no resumption
// (every connection is a full handshake, as every tagauth login is a full
// verify). Each operation is a TCP connection, a handshake and one byte of
// application data from the server, so that the handshake has finished on
// both sides.

// tlsServerName is the name in the server certificate.
const tlsServerName = "bench.tagauth.invalid"

// TLSMaterial is the PEM of the baseline's CA, server and client
// certificates and keys, made fresh for each run.
type TLSMaterial struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey []byte
}

// NewTLSMaterial makes a CA and a server and a client certificate it
// signs, all ECDSA P-256.
func NewTLSMaterial() (TLSMaterial, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSMaterial{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tagauth bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return TLSMaterial{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{name}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
	}
	m := TLSMaterial{CA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	if m.ServerCert, m.ServerKey, err = leaf(2, tlsServerName, x509.ExtKeyUsageServerAuth); err != nil {
		return TLSMaterial{}, err
	}
	if m.ClientCert, m.ClientKey, err = leaf(3, "sensor-7", x509.ExtKeyUsageClientAuth); err != nil {
		return TLSMaterial{}, err
	}
	return m, nil
}

func pool(caPEM []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate in the PEM")
	}
	return p, nil
}

// ServerConfig is the baseline server's TLS configuration.
func (m TLSMaterial) ServerConfig() (*tls.Config, error) {
	cert, err := tls.X509KeyPair(m.ServerCert, m.ServerKey)
	if err != nil {
		return nil, err
	}
	cas, err := pool(m.CA)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas,
		CurvePreferences: []tls.CurveID{tls.X25519}, SessionTicketsDisabled: true,
	}, nil
}

func (m TLSMaterial) clientConfig() (*tls.Config, error) {
	cert, err := tls.X509KeyPair(m.ClientCert, m.ClientKey)
	if err != nil {
		return nil, err
	}
	roots, err := pool(m.CA)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: roots,
		ServerName: tlsServerName, CurvePreferences: []tls.CurveID{tls.X25519},
	}, nil
}

// ServeMTLS accepts connections on ln until it is closed: a full
// handshake that requires and verifies the client's certificate, one byte
// of application data, close.
func ServeMTLS(ln net.Listener, cfg *tls.Config) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Go(func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(c, cfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			_, _ = tc.Write([]byte{1})
		})
	}
}

// MTLSOps returns the operations of the mTLS baseline: a new TCP
// connection, a full TLS 1.3 handshake with the client certificate, one
// byte read, close. link counts the TLS bytes of the handshake alone (TCP
// and IP headers excluded, as UDP and IP headers are for CoAP).
func MTLSOps(addr string, m TLSMaterial, link *Link) (func(int) (Op, error), error) {
	cfg, err := m.clientConfig()
	if err != nil {
		return nil, err
	}
	return func(int) (Op, error) { return &mtlsOp{addr: addr, cfg: cfg, link: link}, nil }, nil
}

type mtlsOp struct {
	addr string
	cfg  *tls.Config
	link *Link
	d    net.Dialer
	buf  [1]byte
}

func (o *mtlsOp) Do(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := o.d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return withKind(KindNetwork, err)
	}
	// Reset on close instead of TIME_WAIT: thousands of connections a
	// second would otherwise exhaust the ephemeral ports.
	_ = raw.(*net.TCPConn).SetLinger(0)
	cc := &countingConn{Conn: raw}
	defer cc.Close()
	_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(cc, o.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return withKind(KindRejected, fmt.Errorf("TLS handshake: %w", err))
	}
	o.link.Datagrams.Add(cc.records())
	o.link.Bytes.Add(cc.n)
	if _, err := io.ReadFull(tc, o.buf[:]); err != nil {
		return withKind(KindNetwork, err)
	}
	return nil
}

func (o *mtlsOp) Close() {}

// countingConn counts the bytes a TLS client reads and writes, and the
// writes and reads that carried them.
type countingConn struct {
	net.Conn
	n, writes, reads uint64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += uint64(n)
	if n > 0 {
		c.reads++
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n += uint64(n)
	c.writes++
	return n, err
}

func (c *countingConn) records() uint64 { return c.reads + c.writes }
