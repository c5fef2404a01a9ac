package store

import (
	"context"
	"errors"

	"github.com/evchat/evchat/domain"
)

// UserNames finds accounts by name.
type UserNames interface {
	UserByName(ctx context.Context, name string) (User, error)
}

// FindUser finds the account of a name a person typed, given its
// canonical form (domain.CanonicalUserName): under the canonical form, or,
// for an account made before names were canonical (stored as it was typed
// then, "Ann"), under the name exactly as typed, so that such an account
// can still log in.
func FindUser(ctx context.Context, st UserNames, typed, canonical string) (User, error) {
	u, err := st.UserByName(ctx, canonical)
	if errors.Is(err, domain.ErrNotFound) && typed != canonical {
		if legacy, lerr := st.UserByName(ctx, typed); lerr == nil {
			return legacy, nil
		}
	}
	return u, err
}
