package bus

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
)

// SSLChallenge is getSSLChallenge's answer.
type SSLChallenge struct {
	Nonce string `json:"nonce"`
}

// SSLLogin logs in with a TLS client certificate: the hub hands out a
// challenge, the client signs it with the certificate's key, the hub checks
// the certificate against its client CA and the signature, and opens a
// session for the user named by the certificate's CN.
func (c *Client) SSLLogin(ctx context.Context, certFile, keyFile string) error {
	if keyFile == "" {
		keyFile = certFile
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("ssl login: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("ssl login: key in %s cannot sign", keyFile)
	}
	var ch SSLChallenge
	if err := c.Call(ctx, "getSSLChallenge", nil, nil, &ch); err != nil {
		return err
	}
	var sig []byte
	if _, ok := signer.Public().(ed25519.PublicKey); ok {
		sig, err = signer.Sign(rand.Reader, []byte(ch.Nonce), crypto.Hash(0))
	} else {
		digest := sha256.Sum256([]byte(ch.Nonce))
		sig, err = signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	if err != nil {
		return fmt.Errorf("ssl login: sign: %w", err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return fmt.Errorf("ssl login: %w", err)
	}
	// Send only the certificate blocks, never the key.
	var chain []byte
	for _, b := range certificateBlocks(certPEM) {
		chain = append(chain, pem.EncodeToMemory(b)...)
	}
	var s Session
	if err := c.Call(ctx, "sslLogin", []any{string(chain), ch.Nonce, base64.StdEncoding.EncodeToString(sig)}, nil, &s); err != nil {
		return err
	}
	c.session = s.Header()
	return nil
}

// certificateBlocks are the CERTIFICATE blocks of PEM data (koji's cert
// file holds the key too).
func certificateBlocks(data []byte) []*pem.Block {
	var out []*pem.Block
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, b)
		}
	}
}

// CertificateCN is the CN of the first certificate in a PEM file: the user
// a certificate connects as.
func CertificateCN(certFile string) (string, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	blocks := certificateBlocks(data)
	if len(blocks) == 0 {
		return "", fmt.Errorf("certificate: no certificate in %s", certFile)
	}
	cert, err := x509.ParseCertificate(blocks[0].Bytes)
	if err != nil {
		return "", fmt.Errorf("certificate %s: %w", certFile, err)
	}
	return cert.Subject.CommonName, nil
}
