package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"filippo.io/age"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/dump"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
)

// backup takes a backup through the admin API, encrypted to recipients.
func (tg *testGW) backup(recipients ...string) ([]byte, error) {
	tg.t.Helper()
	body, err := json.Marshal(adminapi.BackupRequest{Recipients: recipients})
	if err != nil {
		tg.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, tg.url("/v1/backup"), bytes.NewReader(body))
	if err != nil {
		tg.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tg.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := tg.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return b, nil
}

// TestBackupUnderLoad takes a backup while logins and admin writes run,
// restores it into a new data directory (or a new PostgreSQL schema) and
// logs in there with the cards and credentials issued before it.
func TestBackupUnderLoad(t *testing.T) {
	for _, backend := range []string{"bolt", "postgres"} {
		t.Run(backend, func(t *testing.T) { testBackupUnderLoad(t, backend) })
	}
}

func testBackupUnderLoad(t *testing.T, backend string) {
	root := t.TempDir()
	cfg := testConfig(filepath.Join(root, "a"), protocol.Hardened)
	var target *postgres.Store
	if backend == "postgres" {
		su, _ := pgtest.Schema(t)
		cfg = withBackends(t, cfg, su, "")
		cfg.AdminToken = "backup-test-admin-token-0123456789"
		tu, _ := pgtest.Schema(t)
		var err error
		if target, err = postgres.Open(context.Background(), tu, postgres.Options{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { target.Close() })
	}
	tg := startGateway(t, cfg)
	const users = 4
	cards := make([]protocol.Card, users)
	for i := range cards {
		cards[i] = tg.enrol(fmt.Sprintf("user-%d", i))
		tg.grant(cards[i].ID, "lab")
	}
	cred := tg.provision("door", "lab")
	revoked := tg.enrol("gone")
	tg.grant("gone", "lab")
	tg.call(http.MethodPost, "/v1/users/gone/revoke", nil, nil)
	tg.mustLogin(cards[0], cred)

	// Load: logins from every card, and devices provisioned, while the
	// backup is taken.
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		logins atomic.Int64
		errs   = make(chan error, users+1)
	)
	for _, c := range cards {
		wg.Go(func() {
			for !stop.Load() {
				r := tg.login(c, cred)
				if r.err != nil || r.code != coap.Changed || !r.match {
					errs <- fmt.Errorf("login %s under load: code %v wire %v err %v", c.ID, r.code, r.wire, r.err)
					return
				}
				logins.Add(1)
			}
		})
	}
	var provisioned atomic.Int64
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			tg.provision(fmt.Sprintf("extra-%d", i), "")
			provisioned.Add(1)
		}
	})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	// The backup starts once the load runs.
	testenv.Eventually(t, "logins under way", func() bool { return logins.Load() >= 2*users && provisioned.Load() >= 2 })
	enc, berr := tg.backup(id.Recipient().String())
	during := logins.Load()
	testenv.Eventually(t, "logins after the backup", func() bool { return logins.Load() >= during+users })
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if berr != nil {
		t.Fatalf("backup: %v", berr)
	}
	// Enrolled after the backup: unknown to the restored gateway.
	late := tg.enrol("late")
	tg.grant("late", "lab")
	tg.mustLogin(late, cred)

	// The archive is encrypted: no key, no plaintext member names.
	kf, err := os.ReadFile(filepath.Join(cfg.DataDir, gateway.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte(gateway.KeyFileName)) || bytes.Contains(enc, kf[:40]) {
		t.Fatal("the backup is not encrypted")
	}
	if last := tg.lastAudit(gateway.KindBackup); last.Outcome != gateway.OutcomeOK {
		t.Errorf("the backup's audit record: %+v", last)
	}
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := age.Decrypt(bytes.NewReader(enc), other); err == nil {
		t.Fatal("another identity decrypts the backup")
	}

	// A truncated backup restores nothing and leaves no directory.
	cut := filepath.Join(root, "cut")
	if _, err := restore(enc[:len(enc)-100], id, cut, nil); err == nil {
		t.Fatal("a truncated backup was restored")
	}
	if _, err := os.Stat(cut); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore left %s: %v", cut, err)
	}

	dir := filepath.Join(root, "restored")
	var into store.Loader
	if target != nil {
		into = target
	}
	m, err := restore(enc, id, dir, into)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if m.Backend != backend || m.Profile != "hardened" {
		t.Errorf("manifest %+v", m)
	}
	// A second restore into the now filled directory is refused.
	if _, err := restore(enc, id, dir, nil); !errors.Is(err, dump.ErrDirNotEmpty) {
		t.Errorf("restore into a filled directory: %v", err)
	}
	tg.stop()

	cfg2 := testConfig(dir, protocol.Hardened)
	if target != nil {
		cfg2 = withBackends(t, cfg2, pgURL(t, target.Schema()), "")
		cfg2.AdminToken = cfg.AdminToken
	}
	tg2 := startGateway(t, cfg2)
	for _, c := range cards {
		tg2.mustLogin(c, via(cred, tg2))
	}
	if r := tg2.login(revoked, via(cred, tg2)); r.code == coap.Changed {
		t.Error("a user revoked before the backup logged in after the restore")
	}
	if r := tg2.login(late, via(cred, tg2)); r.code == coap.Changed {
		t.Error("a user enrolled after the backup logged in after the restore")
	}
	var devs adminapi.DeviceList
	tg2.call(http.MethodGet, "/v1/devices", nil, &devs)
	if n := len(devs.Devices); n < 3 || int64(n) > provisioned.Load()+1 {
		t.Errorf("restored %d devices; %d were provisioned during the backup", n, provisioned.Load())
	}
}

// pgURL is the test server's URL for schema.
func pgURL(t *testing.T, schema string) string {
	u := pgtest.URL(t)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "schema=" + schema
}

func restore(enc []byte, id age.Identity, dir string, target store.Loader) (dump.Manifest, error) {
	r, err := age.Decrypt(bytes.NewReader(enc), id)
	if err != nil {
		return dump.Manifest{}, err
	}
	return dump.Restore(context.Background(), r, dump.RestoreOptions{Dir: dir, Target: target})
}

// TestBackupRefusals: no backup without the admin token or without a
// valid recipient; nothing is audited as taken then.
func TestBackupRefusals(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	tg.callErr(http.MethodPost, "/v1/backup", "not-the-token", adminapi.BackupRequest{Recipients: []string{"age1x"}}, http.StatusUnauthorized)
	tg.callErr(http.MethodPost, "/v1/backup", tg.token, adminapi.BackupRequest{}, http.StatusBadRequest)
	if ae := tg.callErr(http.MethodPost, "/v1/backup", tg.token, adminapi.BackupRequest{Recipients: []string{"age1notarecipient"}}, http.StatusBadRequest); !strings.Contains(ae.Message, "recipients") {
		t.Errorf("bad recipient: %q", ae.Message)
	}
	many := make([]string, 17)
	for i := range many {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		many[i] = id.Recipient().String()
	}
	tg.callErr(http.MethodPost, "/v1/backup", tg.token, adminapi.BackupRequest{Recipients: many}, http.StatusBadRequest)
	if page := tg.auditPage("?kind=" + gateway.KindBackup); len(page.Records) != 0 {
		t.Errorf("refused backups were audited: %+v", page.Records)
	}
	if _, err := tg.backup(many[:16]...); err != nil {
		t.Errorf("a backup to 16 recipients: %v", err)
	}
}
