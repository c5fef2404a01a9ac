package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

func TestTokens(t *testing.T) {
	tok, err := NewTokens([]byte(strings.Repeat("k", 32)), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewTokens([]byte(strings.Repeat("x", 32)), time.Hour)
	now := time.Unix(1_800_000_000, 0)
	s, _ := tok.Issue("42", "phone", now)
	c, err := tok.Verify(s, now.Add(time.Minute))
	if err != nil || c.UserID != "42" || c.DeviceID != "phone" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	cases := map[string]struct {
		token string
		at    time.Time
	}{
		"expired":       {s, now.Add(2 * time.Hour)},
		"other secret":  {func() string { s, _ := other.Issue("42", "phone", now); return s }(), now},
		"tampered body": {strings.Replace(s, "v1.e", "v1.f", 1), now},
		"garbage":       {"hello", now},
		"empty":         {"", now},
		"no signature":  {s[:strings.LastIndexByte(s, '.')], now},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := tok.Verify(tc.token, tc.at); !errors.Is(err, domain.ErrUnauthorized) {
				t.Fatalf("got %v, want unauthorized", err)
			}
		})
	}
	if _, err := NewTokens([]byte("short"), 0); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, "correct horse") {
		t.Fatal("right password refused")
	}
	if CheckPassword(h, "wrong horse") || CheckPassword("nonsense", "correct horse") {
		t.Fatal("wrong password accepted")
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Fatal("same salt twice")
	}
}
