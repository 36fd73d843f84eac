package gateway

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/atomicfile"
)

// certLifetime is the validity of the self-signed admin certificate.
// Clients pin its fingerprint, so expiry would only force a re-pin.
const certLifetime = 10 * 365 * 24 * time.Hour

// openToken reads the admin token: from the configuration, or from
// DATA/admin-token (path), generated at first start. Only its hash is
// kept.
func openToken(cfg *Config, log *slog.Logger) (hash [sha256.Size]byte, path string, err error) {
	tok := cfg.AdminToken
	if tok == "" {
		path = filepath.Join(cfg.DataDir, adminapi.TokenFileName)
		b, err := readPrivate(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			var raw [32]byte
			if _, err := rand.Read(raw[:]); err != nil {
				return hash, "", fmt.Errorf("gateway: drawing the admin token: %w", err)
			}
			tok = hex.EncodeToString(raw[:])
			if err := atomicfile.Write(path, []byte(tok+"\n")); err != nil {
				return hash, "", fmt.Errorf("gateway: %w", err)
			}
			log.Info("created admin token", "path", path)
		case err != nil:
			return hash, "", fmt.Errorf("gateway: admin token: %w", err)
		default:
			tok = strings.TrimSpace(string(b))
		}
	}
	if err := CheckTokenStrength(tok); err != nil { // adminguard.go
		return hash, "", fmt.Errorf("gateway: the admin token (TAGAUTH_ADMIN_TOKEN or %s): %w; or unset TAGAUTH_ADMIN_TOKEN and remove the file to have one generated", adminapi.TokenFileName, err)
	}
	return sha256.Sum256([]byte(tok)), path, nil
}

// openCert loads the admin certificate: the operator's, or the self-signed
// one from the data directory, made at first start. fingerprint is what
// clients pin.
func openCert(cfg *Config, now time.Time, log *slog.Logger) (cert tls.Certificate, fingerprint string, err error) {
	certPath, keyPath := cfg.TLSCert, cfg.TLSKey
	if certPath == "" {
		certPath = filepath.Join(cfg.DataDir, CertFileName)
		keyPath = filepath.Join(cfg.DataDir, CertKeyFileName)
		_, errC := os.Stat(certPath)
		_, errK := os.Stat(keyPath)
		if errors.Is(errC, fs.ErrNotExist) || errors.Is(errK, fs.ErrNotExist) {
			if err := makeCert(certPath, keyPath, cfg, now, log); err != nil {
				return tls.Certificate{}, "", err
			}
		}
	}
	keyPEM, err := readPrivate(keyPath)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("gateway: admin TLS key: %w", err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("gateway: admin TLS certificate: %w", err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("gateway: admin TLS certificate %s and key %s do not load: %w (move both away to have new ones made, then re-pin the new fingerprint)", certPath, keyPath, err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return cert, hex.EncodeToString(sum[:]), nil
}

// makeCert writes a self-signed ECDSA P-256 certificate valid for the
// loopback names, the admin host and the advertised host.
func makeCert(certPath, keyPath string, cfg *Config, now time.Time, log *slog.Logger) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("gateway: admin certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return fmt.Errorf("gateway: admin certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tagauth gateway admin"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	hosts := []string{cfg.Advertise}
	if h, _, err := net.SplitHostPort(cfg.AdminAddr); err == nil {
		hosts = append(hosts, h)
	}
	for _, h := range hosts {
		addSAN(tmpl, h)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("gateway: admin certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("gateway: admin certificate key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	defer clear(keyPEM)
	defer clear(pkcs8)
	if err := atomicfile.Write(keyPath, keyPEM); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := atomicfile.WritePerm(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	log.Info("created self-signed admin certificate", "path", certPath)
	return nil
}

// addSAN adds host to the certificate's names unless it is empty, an
// unspecified address or already there.
func addSAN(c *x509.Certificate, host string) {
	if host == "" {
		return
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return
		}
		for _, have := range c.IPAddresses {
			if have.Equal(ip) {
				return
			}
		}
		c.IPAddresses = append(c.IPAddresses, ip)
		return
	}
	for _, have := range c.DNSNames {
		if strings.EqualFold(have, host) {
			return
		}
	}
	c.DNSNames = append(c.DNSNames, host)
}

// FingerprintOfPEM returns the hex SHA-256 of the first certificate in a
// PEM file's content, as clients pin it.
func FingerprintOfPEM(certPEM []byte) (string, error) {
	for {
		var b *pem.Block
		b, certPEM = pem.Decode(certPEM)
		if b == nil {
			return "", errors.New("no CERTIFICATE block in the PEM data")
		}
		if b.Type == "CERTIFICATE" {
			sum := sha256.Sum256(b.Bytes)
			return hex.EncodeToString(sum[:]), nil
		}
	}
}

// readPrivate reads a file that must be readable by its owner only.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, so other users may read it: run chmod 600 %s", path, perm, path)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// fileStamp identifies a version of a file cheaply, to notice changes.
type fileStamp struct {
	fi os.FileInfo
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi: fi}, nil
}

// changed reports whether s differs from old: another file (an atomic
// rename), another size or another modification time.
func (s fileStamp) changed(old fileStamp) bool {
	if s.fi == nil || old.fi == nil {
		return s.fi != old.fi
	}
	return !os.SameFile(s.fi, old.fi) || s.fi.Size() != old.fi.Size() || !s.fi.ModTime().Equal(old.fi.ModTime())
}
