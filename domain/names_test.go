package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/evchat/evchat/domain"
)

func TestCanonicalUserName(t *testing.T) {
	tests := []struct {
		in, want string // want "" means refused
	}{
		{"ann", "ann"},
		{"ANN", "ann"},
		{"Ann", "ann"},
		{"ＡＮＮ", "ann"},    // full-width: NFKC
		{"ann\u0130", ""}, // İ folds to i + combining dot: not a-z
		{"ann.", ""},      // trailing separator
		{".ann", ""},      // leading separator
		{"a..nn", ""},     // two in a row
		{"a.nn", "a.nn"},  // a different name
		{"ann_b-c.d", "ann_b-c.d"},
		{"ann\u202e", ""}, // right-to-left override
		{"an\u200dn", ""}, // zero-width joiner
		{"ann\n", ""},     // control
		{"ann\xff", ""},   // invalid UTF-8
		{"", ""},
		{strings.Repeat("a", domain.MaxNameLen), strings.Repeat("a", domain.MaxNameLen)},
		{strings.Repeat("a", domain.MaxNameLen+1), ""},
		{"ﬀ", "ff"},           // a ligature: NFKC
		{"straße", "strasse"}, // full case folding: ß is ss
	}
	for _, tc := range tests {
		got, err := domain.CanonicalUserName(tc.in)
		if tc.want == "" {
			if !errors.Is(err, domain.ErrBadRequest) {
				t.Errorf("%q: got %q %v, want bad_request", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}
