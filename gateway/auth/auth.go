// Package auth issues and checks the bearer tokens of devices and hashes
// passwords with argon2id.
//
// A token is stateless: "v1.", the base64url JSON claims (user, device,
// expiry), ".", and the base64url HMAC-SHA256 of the first two parts under
// the deployment's secret. Every gateway and API process with the secret
// checks tokens without a store round trip.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/evchat/evchat/domain"
)

// Claims are what a token says.
type Claims struct {
	UserID   domain.UserID   `json:"u"`
	DeviceID domain.DeviceID `json:"d"`
	Expires  int64           `json:"exp"` // unix seconds
	// Session names the login that issued the token: logout revokes it
	// (store.RevokeSession), and every node refuses it after. Random, 16
	// bytes in hex. Tokens issued before sessions have none.
	Session string `json:"s,omitempty"`
}

// Tokens signs and verifies tokens.
type Tokens struct {
	secret []byte
	ttl    time.Duration
}

// MinSecretLen is the shortest token secret NewTokens takes, in bytes.
const MinSecretLen = 32

// NewTokens returns a signer with a secret of at least 32 bytes and a token
// lifetime (0 means 30 days).
func NewTokens(secret []byte, ttl time.Duration) (*Tokens, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: secret shorter than %d bytes", MinSecretLen)
	}
	if ttl == 0 {
		ttl = 30 * 24 * time.Hour
	}
	return &Tokens{secret: secret, ttl: ttl}, nil
}

// Issue returns a token for the device, valid from now for the lifetime.
// The token names a new random session.
func (t *Tokens) Issue(u domain.UserID, d domain.DeviceID, now time.Time) (string, time.Time) {
	exp := now.Add(t.ttl).Truncate(time.Second)
	var sid [16]byte
	_, _ = rand.Read(sid[:]) // never fails (crypto/rand)
	b, _ := json.Marshal(Claims{UserID: u, DeviceID: d, Expires: exp.Unix(), Session: hex.EncodeToString(sid[:])})
	body := "v1." + base64.RawURLEncoding.EncodeToString(b)
	return body + "." + base64.RawURLEncoding.EncodeToString(t.mac(body)), exp
}

// Verify checks a token's signature and expiry at now.
func (t *Tokens) Verify(token string, now time.Time) (Claims, error) {
	bad := domain.Errorf(domain.CodeUnauthorized, "invalid token")
	i := strings.LastIndexByte(token, '.')
	if !strings.HasPrefix(token, "v1.") || i <= 3 {
		return Claims{}, bad
	}
	body, sig := token[:i], token[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || subtle.ConstantTimeCompare(got, t.mac(body)) != 1 {
		return Claims{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(body[3:])
	if err != nil {
		return Claims{}, bad
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil || c.UserID == "" || c.DeviceID == "" {
		return Claims{}, bad
	}
	if now.Unix() >= c.Expires {
		return Claims{}, domain.Errorf(domain.CodeUnauthorized, "token expired")
	}
	return c, nil
}

func (t *Tokens) mac(s string) []byte {
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// argon2id parameters: OWASP's minimum (19 MiB, 2 passes, 1 lane).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns a PHC-formatted argon2id hash with a random salt.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches a hash made by HashPassword.
func CheckPassword(hash, pw string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, tm uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &tm, &p); err != nil {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, tm, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}
