package mqttbind_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/mqttbind/mqtttest"
	"github.com/tagauth/tagauth/internal/transport"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate (CN "sensor-7") as PEM files in dir; leaf makes more client
// certificates.
func pki(t *testing.T, dir string) (ca, srvCert, srvKey, cliCert, cliKey string, client func(cn string) (string, string)) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(serial int64, cn string, ext x509.ExtKeyUsage, ip bool) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{ext}}
		if ip {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		return write(cn+".crt", "CERTIFICATE", der), write(cn+".key", "EC PRIVATE KEY", kder)
	}
	ca = write("ca.crt", "CERTIFICATE", caDER)
	srvCert, srvKey = leaf(2, "broker", x509.ExtKeyUsageServerAuth, true)
	cliCert, cliKey = leaf(3, "sensor-7", x509.ExtKeyUsageClientAuth, false)
	serial := int64(3)
	client = func(cn string) (string, string) {
		serial++
		return leaf(serial, cn, x509.ExtKeyUsageClientAuth, false)
	}
	return
}

// TestTLSClientCertificate: mqtts:// with a CA file and a client
// certificate, against a broker that requires one and takes its CN as the
// user name (so the ACL of docs/mosquitto/tagauth.acl applies).
func TestTLSClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck, client := pki(t, dir)
	acl, err := os.ReadFile("../../docs/mosquitto/tagauth.acl")
	if err != nil {
		t.Fatal(err)
	}
	aclPath := filepath.Join(dir, "acl")
	os.WriteFile(aclPath, acl, 0o600)
	b := mqtttest.StartConf(t, fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\nacl_file %s\n",
		ca, sc, sk, aclPath))
	url := "mqtts://" + b.Addr()

	// The device, by certificate: serves its topics.
	dev, err := mqttbind.Dial(t.Context(), mqttbind.Config{URL: url, CAFile: ca, CertFile: cc, KeyFile: ck})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	h := &counter{}
	if _, err := mqttbind.NewResponder(t.Context(), dev, mqttbind.ResponderConfig{Handler: h,
		Routes: mqttbind.DeviceRoutes(dev.Root(), "sensor-7")}); err != nil {
		t.Fatal(err)
	}
	ready(t, dev)
	// The user, by certificate: a task through the broker.
	ac, ak := client("alice")
	user, err := mqttbind.Dial(t.Context(), mqttbind.Config{URL: url, CAFile: ca, CertFile: ac, KeyFile: ak})
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	rq, err := mqttbind.NewRequester(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	ready(t, user)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	code, out, err := rq.Device("sensor-7").Post(ctx, coapbind.PathTask, []byte{1, 2}, transport.Options{})
	if err != nil || code != coap.Changed || !bytes.Equal(out, []byte{2, 1}) {
		t.Fatalf("task over TLS: %v %s %x", err, code, out)
	}

	// Without the CA file the broker's certificate is refused: never
	// connected.
	bad, err := mqttbind.Dial(t.Context(), mqttbind.Config{URL: url, CertFile: cc, KeyFile: ck})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	short, cancel2 := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel2()
	if bad.Ready(short) == nil {
		t.Fatal("connected to a broker whose certificate no known CA signed")
	}
}
