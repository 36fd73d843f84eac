package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// gwStatus is "tagauth gateway status": whether the gateway can do its
// work, part by part. It exits 1 when a part is not OK, so that a
// monitoring script or a container health check can use it as it is.
func gwStatus(args []string, stdout, stderr io.Writer) int {
	st, _, asJSON, rc, ok := gwFetch(args, stderr, "status", "[--json] [admin flags]",
		"Shows the health of the gateway and its backends: the store, the replay cache and the audit trail,\n"+
			"each OK or what is wrong. Exits 0 when all are OK, 1 when one is not (any token role may ask).", true, (*adminapi.Client).Status)
	if !ok {
		return rc
	}
	if asJSON {
		if rc := gwPrintJSON(stdout, st); rc != 0 {
			return rc
		}
	} else {
		gwPrintStatus(stdout, st)
	}
	if !st.OK {
		return 1
	}
	return 0
}

func gwPrintStatus(w io.Writer, st adminapi.Status) {
	word := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "DOWN"
	}
	role := "single gateway"
	if st.Replica {
		role = "replica"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "gateway\t%s\t%s, %s profile, %s %s (%s)\n", word(st.OK), role, gwText(st.Profile),
		gwText(st.Build.Version), gwText(st.Build.Revision), gwText(st.Build.GoVersion))
	for _, p := range []struct {
		name string
		h    adminapi.PartHealth
	}{{"store", st.Store}, {"replay", st.Replay}, {"audit", st.Audit}} {
		what := gwText(p.h.Kind)
		if !p.h.Since.IsZero() {
			what += ", since " + gwTime(p.h.Since)
		}
		if p.h.QuarantineUntil != nil {
			what += ", quarantined until " + gwTime(*p.h.QuarantineUntil)
		}
		if p.h.Error != "" {
			what += ": " + gwText(p.h.Error)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.name, word(p.h.OK), what)
	}
	tw.Flush()
}
