package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/dump"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/store"
)

// Online backup through the admin API: the embedded store is locked by
// the serving gateway, so a backup of it can only be taken in this
// process (a bbolt read transaction, which writers do not wait for).

// KindBackup is the audit kind of a backup taken.
const KindBackup = "backup"

// backupRoutes adds the backup route to the admin mux.
func (g *Gateway) backupRoutes(mux router) {
	mux.Handle("POST "+adminapi.PathBackup, g.tokens.auth(g.handleBackup))
}

// handleBackup streams an age-encrypted backup archive (internal/dump):
// the store's consistent snapshot and the key file. An error after the
// first byte aborts the connection, so the client sees a truncated age
// stream, which never decrypts, rather than a short backup.
func (g *Gateway) handleBackup(w http.ResponseWriter, r *http.Request) {
	var req adminapi.BackupRequest
	if !decode(w, r, &req) {
		return
	}
	if len(req.Recipients) == 0 || len(req.Recipients) > adminapi.MaxBackupRecipients {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("give 1 to %d age recipients (age1...)", adminapi.MaxBackupRecipients))
		return
	}
	recips, err := age.ParseRecipients(strings.NewReader(strings.Join(req.Recipients, "\n")))
	if err != nil {
		writeError(w, http.StatusBadRequest, "recipients: "+err.Error())
		return
	}
	if err := (adminAudit{g}).Ready(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "audit records cannot be written now (the gateway log says why): no backup was taken; retry once the disk or store is fixed")
		return
	}
	// The key file is replaced atomically (keyfile.Save): one read sees
	// one version of it.
	keyFile, err := g.keys.readFile()
	if err != nil {
		g.log.Error("backup: reading the key file", "err", err)
		writeError(w, http.StatusInternalServerError, "reading the key file failed (the gateway log says why)")
		return
	}
	defer clear(keyFile) // the master keys, in clear: not left on the heap
	// The record comes first: a copy of the keys leaves the gateway.
	rec := store.AuditRecord{Time: g.now(), Kind: KindBackup, Outcome: OutcomeOK, Reason: "backup taken", Source: r.RemoteAddr,
		Detail: fmt.Sprintf("encrypted to %d recipient(s)", len(recips))}
	if err := g.audit.record(adminsvc.ByCaller(r.Context(), rec)); err != nil {
		writeError(w, http.StatusServiceUnavailable, "the backup's audit record could not be written ("+err.Error()+"): no backup was taken")
		return
	}
	// A large store outlasts the admin API's write timeout.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="tagauth-backup.tar.age"`)
	w.WriteHeader(http.StatusOK)
	enc, err := age.Encrypt(w, recips...)
	if err == nil {
		var m dump.Manifest
		m, err = dump.WriteArchive(r.Context(), enc, g.store, keyFile, g.profile, g.now())
		if err == nil {
			err = enc.Close()
		}
		if err == nil {
			g.log.Info("backup taken", "backend", m.Backend, "source", r.RemoteAddr)
			return
		}
	}
	// The client's going away is the usual cause; either way the record
	// of the backup taken is followed by the record that it did not end.
	g.log.Error("backup failed; the connection is cut so that the client keeps no partial backup", "err", err)
	g.audit.submit(adminsvc.ByCaller(r.Context(), store.AuditRecord{Time: g.now(), Kind: KindBackup, Outcome: OutcomeError, Reason: "backup not completed", Source: r.RemoteAddr}))
	panic(http.ErrAbortHandler)
}
