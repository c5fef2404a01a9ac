package ws

import (
	"net/http/httptest"
	"testing"

	"github.com/evchat/evchat/domain"
)

// TestResumeFrom: the resume point of an upgrade, both or neither of epoch
// and position; anything else is bad_request before the upgrade.
func TestResumeFrom(t *testing.T) {
	tests := []struct {
		query    string
		resume   bool
		epoch    int32
		position int64
		bad      bool
	}{
		{"", false, 0, 0, false},
		{"token=x", false, 0, 0, false},
		{"epoch=1&position=-1", true, 1, -1, false},
		{"epoch=2&position=41", true, 2, 41, false},
		{"epoch=0&position=0", true, 0, 0, false},
		{"epoch=1", false, 0, 0, true},
		{"position=3", false, 0, 0, true},
		{"epoch=1&position=x", false, 0, 0, true},
		{"epoch=1&position=-2", false, 0, 0, true},
		{"epoch=-1&position=0", false, 0, 0, true},
		{"epoch=2147483648&position=0", false, 0, 0, true},
		{"epoch=1&position=9223372036854775808", false, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resume, epoch, position, err := resumeFrom(httptest.NewRequest("GET", "/v1/ws?"+tt.query, nil))
			if tt.bad {
				if domain.CodeOf(err) != domain.CodeBadRequest {
					t.Fatalf("err %v, want bad_request", err)
				}
				return
			}
			if err != nil || resume != tt.resume || epoch != tt.epoch || position != tt.position {
				t.Errorf("resumeFrom = %v, %d, %d, %v; want %v, %d, %d", resume, epoch, position, err, tt.resume, tt.epoch, tt.position)
			}
		})
	}
}
