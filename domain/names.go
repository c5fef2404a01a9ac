package domain

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// CanonicalUserName returns the one form under which a user name is
// stored, compared and looked up, or a bad_request error. The rule:
//
//  1. Invalid UTF-8, control characters (Cc) and format characters (Cf:
//     the bidi overrides and isolates U+202A-U+202E and U+2066-U+2069,
//     zero-width joiners, U+200E/U+200F marks) are refused.
//  2. The name is NFKC-normalised, case-folded (golang.org/x/text/cases
//     Fold) and NFKC-normalised again: "ANN", "Ann" and the full-width
//     "ＡＮＮ" all become "ann".
//  3. The result must be 1 to MaxNameLen characters of a-z, 0-9, '.', '_'
//     and '-', begin and end with a letter or digit, and have no two of
//     '.', '_', '-' in a row: "ann.", ".ann" and "a..nn" are refused, so a
//     look-alike cannot differ from a name only by a trailing dot.
//
// So two names that people would read as one are one account, or the
// second is refused; "a.nn" and "ann" remain two names.
func CanonicalUserName(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", Errorf(CodeBadRequest, "name is not valid UTF-8")
	}
	if strings.IndexFunc(name, func(r rune) bool { return unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) }) >= 0 {
		return "", Errorf(CodeBadRequest, "name contains a control or direction-override character")
	}
	if len(name) > 4*MaxNameLen { // before normalising: bounds the work
		return "", errBadName
	}
	c := norm.NFKC.String(cases.Fold().String(norm.NFKC.String(name)))
	if !validCanonicalName(c) {
		return "", errBadName
	}
	return c, nil
}

var errBadName = Errorf(CodeBadRequest,
	"name must be 1 to %d of a-z, 0-9 and single '.', '_' or '-' between them (upper case is folded to lower)", MaxNameLen)

func validCanonicalName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	sep := func(b byte) bool { return b == '.' || b == '_' || b == '-' }
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z' || b >= '0' && b <= '9':
		case sep(b):
			if i == 0 || i == len(s)-1 || sep(s[i-1]) {
				return false
			}
		default:
			return false
		}
	}
	return true
}
