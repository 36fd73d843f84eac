package postgres

import (
	"sync"
	"testing"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/storetest"
)

func TestTokensContract(t *testing.T) {
	urls := map[store.Store]string{}
	var mu sync.Mutex
	storetest.RunTokens(t,
		func(t *testing.T) store.Store {
			s, u := openFresh(t)
			mu.Lock()
			urls[s] = u
			mu.Unlock()
			return s
		},
		storetest.WithReopen(func(t *testing.T, s store.Store) store.Store {
			mu.Lock()
			u := urls[s]
			mu.Unlock()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openURL(t, u)
		}))
}
