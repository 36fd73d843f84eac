package bolt

import (
	"testing"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/storetest"
)

func TestBatchContract(t *testing.T) {
	storetest.RunBatch(t, func(t *testing.T) store.Store { return openTemp(t) })
}
