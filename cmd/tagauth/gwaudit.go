package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/store/bolt"
)

// gwAuditFlags are serve's audit settings ([audit] in the config file).
type gwAuditFlags struct {
	keep, sample *time.Duration
	fsync        *string
}

func registerAuditFlags(fset *flag.FlagSet) *gwAuditFlags {
	return &gwAuditFlags{
		keep: durationFlag(fset, "audit-keep", gateway.DefaultAuditKeep,
			"how long audit records are kept; older ones are pruned hourly (0: forever)"),
		fsync: fset.String("audit-fsync", "off",
			"audit journal `policy`: off (records survive a crash of the process), always (and of the machine: fdatasync before every answer), or a group-commit interval such as 10ms"),
		sample: durationFlag(fset, "audit-sample", gateway.DefaultAuditSampleEvery,
			"refusals are recorded at most once per kind and reason per this interval, with their count"),
	}
}

// apply puts the flags into cfg; an error is a usage error.
func (f *gwAuditFlags) apply(cfg *gateway.Config) error {
	if *f.keep < 0 || (*f.keep > 0 && *f.keep < time.Hour) {
		return fmt.Errorf("--audit-keep %v: want 0 (forever) or at least 1h", *f.keep)
	}
	if *f.sample < 100*time.Millisecond || *f.sample > time.Hour {
		return fmt.Errorf("--audit-sample %v: want 100ms to 1h", *f.sample)
	}
	pol, err := auditlog.ParseSync(*f.fsync)
	if err != nil {
		return fmt.Errorf("--audit-fsync: %v", err)
	}
	cfg.AuditKeep, cfg.AuditSync, cfg.AuditSampleEvery = *f.keep, pol, *f.sample
	return nil
}

// gwCompact is "tagauth gateway compact": it rewrites a stopped gateway's
// store without the free pages pruning left, which bbolt keeps for reuse
// but never gives back to the file system.
func gwCompact(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("compact", "--data DIR",
		"Rewrites the embedded store (DATA/store.db) without its free pages, giving the space that pruned\n"+
			"audit records left back to the file system. Stop the gateway first (the store is locked while\n"+
			"it runs). The old file is kept as store.db.old until the next compaction; it needs as much free\n"+
			"space as the compacted store takes.", stderr)
	data := fset.String("data", "", "the gateway's data `directory` (required)")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	if *data == "" || len(pos) > 0 {
		fmt.Fprintln(stderr, "tagauth gateway compact: --data DIR is required, and nothing else")
		return 2
	}
	src := filepath.Join(*data, bolt.FileName)
	tmp, old := src+".compact", src+".old"
	before, err := os.Stat(src)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway compact: %v\n", err)
		return 1
	}
	os.Remove(tmp) // left by an interrupted run
	if err := bolt.Compact(tmp, src); err != nil {
		fmt.Fprintf(stderr, "tagauth gateway compact: %v\n", err)
		return 1
	}
	after, err := os.Stat(tmp)
	if err == nil {
		os.Remove(old)
		if err = os.Link(src, old); err == nil {
			err = os.Rename(tmp, src)
		}
	}
	if err != nil {
		os.Remove(tmp)
		fmt.Fprintf(stderr, "tagauth gateway compact: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "compacted %s: %d -> %d bytes (the old file is %s: remove it once the gateway runs)\n",
		src, before.Size(), after.Size(), old)
	return 0
}
