package bolt

import (
	"testing"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/storetest"
)

func TestTokensContract(t *testing.T) {
	storetest.RunTokens(t,
		func(t *testing.T) store.Store { return openTemp(t) },
		storetest.WithReopen(func(t *testing.T, s store.Store) store.Store {
			path := s.(*Store).Path()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(path)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			return s2
		}))
}
