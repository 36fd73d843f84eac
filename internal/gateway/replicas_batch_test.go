package gateway_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/testenv"
)

// TestReplicasBatch: a batch provisioned on one replica (one PostgreSQL
// transaction, a notification per device) logs in on another, first row
// and last; the other replica then refuses the same batch, naming its
// rows, from its own registry.
func TestReplicasBatch(t *testing.T) {
	c := newCluster(t)
	a := c.start("r0")
	b := c.start("r1")
	card := a.enrol("alice")
	a.grant("alice", "*")
	var csv strings.Builder
	const n = 2000
	for i := range n {
		fmt.Fprintf(&csv, "batch-%04d,g%d\n", i, i%3)
	}
	cb := &adminapi.Client{Base: b.g.AdminURL(), Token: b.token, HTTP: b.hc}
	res, err := cb.ProvisionBatch(context.Background(), []byte(csv.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Clear()
	for _, i := range []int{0, n - 1} {
		cred, err := credfile.Unmarshal(res.Devices[i].Credential)
		if err != nil {
			t.Fatal(err)
		}
		b.mustLogin(card, cred)
		testenv.EventuallyWithin(t, 5*time.Second, "a batch made on r1 seen by r0", func() bool { return a.login(card, via(cred, a)).match })
	}
	ca := &adminapi.Client{Base: a.g.AdminURL(), Token: a.token, HTTP: a.hc}
	_, err = ca.ProvisionBatch(context.Background(), []byte("fresh\n"+csv.String()))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d of %d rows refused", n, n+1)) || !strings.Contains(err.Error(), `line 2: device "batch-0000" is already provisioned`) {
		t.Fatalf("the batch again on r0: %v", err)
	}
}
