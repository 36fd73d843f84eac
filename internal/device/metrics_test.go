package device

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/protocol"
)

// scrapeAgent returns the agent's /metrics text.
func scrapeAgent(t *testing.T, a *Agent) string {
	t.Helper()
	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// wantSample checks that the text has the exact sample line.
func wantSample(t *testing.T, text, line string) {
	t.Helper()
	if !strings.Contains(text, "\n"+line+"\n") {
		t.Errorf("metrics lack %q", line)
	}
}

// TestAgentMetrics: after a scripted run the login, task and table
// metrics say what happened.
func TestAgentMetrics(t *testing.T) {
	r := newRig(t, protocol.Hardened, nil)
	r.agent.Handle("fail", func(context.Context, string, []byte) ([]byte, error) { return nil, errors.New("jammed") })
	ctx := context.Background()
	c1 := r.mustLogin(r.enrol("alice"))
	r.mustLogin(r.enrol("bob"))
	u := r.enrol("mallory")
	if err := r.gw.reg.RevokeUser("mallory"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.login(u); !errors.Is(err, protocol.ErrRejected) {
			t.Fatalf("revoked user: %v", err)
		}
	}
	for range 3 {
		if resp, err := c1.Task(ctx, "echo", "hi"); err != nil || !resp.OK {
			t.Fatalf("echo: %+v %v", resp, err)
		}
	}
	if resp, err := c1.Task(ctx, "fail", ""); err != nil || resp.OK {
		t.Fatalf("fail: %+v %v", resp, err)
	}
	if resp, err := c1.Task(ctx, "no.such.task", ""); err != nil || resp.OK {
		t.Fatalf("unknown task: %+v %v", resp, err)
	}
	r.post(coapbind.PathLogin, []byte{0x02, 0x01, 0xff}) // junk m1

	text := scrapeAgent(t, r.agent)
	wantSample(t, text, `tagauth_device_logins_total{outcome="established",reason="",step="m5"} 2`)
	wantSample(t, text, `tagauth_device_logins_total{outcome="refused",reason="gateway rejected",step="m3"} 2`)
	wantSample(t, text, `tagauth_device_logins_total{outcome="refused",reason="malformed message",step="m1"} 1`)
	wantSample(t, text, `tagauth_device_tasks_total{outcome="ok",task="echo"} 3`)
	wantSample(t, text, `tagauth_device_tasks_total{outcome="failed",task="fail"} 1`)
	wantSample(t, text, `tagauth_device_tasks_total{outcome="refused",task="unknown"} 1`)
	wantSample(t, text, `tagauth_device_sessions_open 2`)
	wantSample(t, text, `tagauth_device_pending_logins 0`)
	if strings.Contains(text, "no.such.task") || strings.Contains(text, "alice") || strings.Contains(text, "mallory") {
		t.Error("a user-chosen name or an identity became a label")
	}
	if !strings.Contains(text, "tagauth_device_coap_received_total") || !strings.Contains(text, "go_goroutines") {
		t.Error("transport or runtime metrics missing")
	}
}

func TestLoginReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{busyError("gateway 127.0.0.1:5683 unreachable"), reasonGatewayDown},
		{busyError("every relay slot is waiting on the gateway"), reasonBusy},
		{localReason{"no login is waiting", protocol.ErrRejected}, reasonNoLogin},
		{gatewayRefusal{protocol.ErrReplayed}, "gateway replayed"},
		{protocol.ReasonBadM3, protocol.ReasonBadM3.Name()},
		{protocol.ErrMalformed, "malformed"},
		{errors.New("odd"), "internal"},
	} {
		if got := loginReason(c.err); got != c.want {
			t.Errorf("loginReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
