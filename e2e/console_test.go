package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/testenv"
)

// chromiumPath finds Debian's chromium. In CI (CI=true) a missing browser
// fails the test: .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("TAGAUTH_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	testenv.SkipOrFail(t, "chromium not found: install it (apt-get install chromium) or set TAGAUTH_CHROMIUM to run the console test (.ci/run installs it)")
	return ""
}

// spkiPin is the base64 SHA-256 of the certificate's public key, which
// Chromium accepts in place of a CA for exactly this certificate.
func spkiPin(t *testing.T, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s is not PEM", certFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// newBrowser starts headless Chromium trusting only the gateway's
// certificate (by its key) and returns a tab context.
func newBrowser(t *testing.T, certFile, downloads string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiPin(t, certFile)),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

func run1(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, pageState(ctx))
	}
}

// pageState describes the page a failed step left, for the failure
// message.
func pageState(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		html = "(no page: " + err.Error() + ")"
	}
	if len(html) > 4000 {
		html = html[:4000] + "..."
	}
	return "page " + loc + ":\n" + html
}

func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		t.Fatalf("waiting for %s: %v\n%s", sel, err, pageState(ctx))
	}
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}

// TestConsole drives the web console in headless Chromium as an operator
// would: log in with the admin token, make an enrolment code (and enrol
// with it), provision a device and download its credential once, revoke
// the device, and find the revocation in the audit log. With
// TAGAUTH_SCREENSHOTS=1 it rewrites docs/img/console-overview.png.
func TestConsole(t *testing.T) {
	chromiumPath(t) // skip or fail before starting processes
	w := newWorld(t, "hardened")
	// Some traffic for the overview: logins and a policy refusal.
	for range 3 {
		if code, _, errs := w.user(nil, "login"); code != 0 {
			t.Fatalf("login: %s", errs)
		}
	}
	bobCode := strings.TrimSpace(must(t, nil, "gateway", "enrol-code", "--data", w.gw.data, "--user", "bob"))
	bobCard := filepath.Join(w.dir, "bob.card")
	must(t, w.userPW, "user", "enroll", "--admin", w.gw.admin, "--fingerprint", w.gw.fingerprint,
		"--code", bobCode, "--id", "bob", "--card", bobCard, fastKDF, "--kdf-m=1024")
	for range 2 {
		code, _, _ := run(t, w.userPW, "user", "login", "--card", bobCard, "--device", w.devAt, "--did", "sensor-7", "--ack-timeout", "200ms", "--timeout", "10s")
		if code == 0 {
			t.Fatal("bob logged in without a grant")
		}
	}

	tokenB, err := os.ReadFile(filepath.Join(w.gw.data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenB))
	downloads := t.TempDir()
	ctx := newBrowser(t, filepath.Join(w.gw.data, "admin-cert.pem"), downloads)
	base := w.gw.admin + "/console/"

	// The steps below run in order on one browser session, each named so
	// that a failure says which. Not logged in: the console sends us to the
	// login form. A wrong token is refused; without the login, no other
	// step can run.
	if !t.Run("log in", func(t *testing.T) {
		run1(t, ctx, "login page", chromedp.Navigate(base+"users"), chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token-not-the-token"), chromedp.Click(chromedp.CSS("#login")))
		if msg := textOf(t, ctx, "#login-error"); !strings.Contains(msg, "not the admin token") {
			t.Fatalf("wrong token: %q", msg)
		}
		run1(t, ctx, "log in", chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Click(chromedp.CSS("#login")),
			chromedp.WaitVisible(chromedp.CSS("#enrol-user")))
	}) {
		return
	}

	// Enrolment code, then a real enrolment with it.
	t.Run("enrol code", func(t *testing.T) {
		run1(t, ctx, "enrol code", chromedp.SendKeys(chromedp.CSS("#enrol-user"), "carol"), chromedp.Click(chromedp.CSS("#enrol")))
		code := textOf(t, ctx, "#code")
		if !regexp.MustCompile(`^[A-Z2-7]{4}(-[A-Z2-7]{4})+$`).MatchString(code) {
			t.Fatalf("enrolment code %q", code)
		}
		must(t, w.userPW, "user", "enroll", "--admin", w.gw.admin, "--fingerprint", w.gw.fingerprint,
			"--code", code, "--id", "carol", "--card", filepath.Join(w.dir, "carol.card"), fastKDF, "--kdf-m=1024")
	})

	// Provision a device and download its credential, once.
	t.Run("provision and download once", func(t *testing.T) {
		run1(t, ctx, "provision", chromedp.Navigate(base+"devices"), chromedp.WaitVisible(chromedp.CSS("#device-id")),
			chromedp.SendKeys(chromedp.CSS("#device-id"), "sensor-9"), chromedp.SendKeys(chromedp.CSS("#device-group"), "plant-b"),
			chromedp.Click(chromedp.CSS("#provision")), chromedp.WaitVisible(chromedp.CSS("#download")))
		if got := textOf(t, ctx, "#provisioned"); got != "sensor-9" {
			t.Fatalf("provisioned %q", got)
		}
		run1(t, ctx, "download", chromedp.Click(chromedp.CSS("#download")))
		credPath := filepath.Join(downloads, "sensor-9.cred.json")
		// The browser writes the file when it is done: poll for a whole,
		// valid credential. credfile.Load insists on mode 0600, which a
		// browser download does not give: parse the bytes.
		var got credfile.Credential
		testenv.EventuallyWithin(t, 20*time.Second, "the credential downloaded to "+downloads, func() bool {
			b, err := os.ReadFile(credPath)
			if err != nil {
				return false
			}
			got, err = credfile.Unmarshal(b)
			return err == nil
		})
		if got.ID != "sensor-9" || got.Fingerprint != w.gw.fingerprint {
			t.Fatalf("downloaded credential %+v", got)
		}
		// The second download is refused: the credential is no longer kept.
		run1(t, ctx, "second download", chromedp.Click(chromedp.CSS("#download")), chromedp.WaitVisible(chromedp.CSS(".flash.error")))
		if msg := textOf(t, ctx, ".flash.error"); !strings.Contains(msg, "already downloaded") {
			t.Fatalf("second download: %q", msg)
		}
	})

	// Revoke it, through the confirmation page.
	t.Run("revoke", func(t *testing.T) {
		run1(t, ctx, "revoke", chromedp.Navigate(base+"devices"), chromedp.WaitVisible(chromedp.CSS("#revoke-sensor-9")),
			chromedp.Click(chromedp.CSS("#revoke-sensor-9")), chromedp.WaitVisible(chromedp.CSS("#confirm")))
		if q := textOf(t, ctx, "#question"); !strings.Contains(q, "sensor-9") {
			t.Fatalf("confirmation asks %q", q)
		}
		run1(t, ctx, "confirm", chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS(".flash")))
		if msg := textOf(t, ctx, ".flash"); msg != "Revoked device sensor-9." {
			t.Fatalf("after revoking: %q", msg)
		}
		devices := must(t, nil, "gateway", "devices", "--data", w.gw.data)
		if !regexp.MustCompile(`sensor-9\s+plant-b.*revoked`).MatchString(devices) {
			t.Fatalf("the CLI does not see the console's revocation:\n%s", devices)
		}
	})

	// The audit log shows it, found with the filters.
	t.Run("audit", func(t *testing.T) {
		run1(t, ctx, "audit", chromedp.Navigate(base+"audit?kind=revoke&device=sensor-9"), chromedp.WaitVisible(chromedp.CSS("#audit-records")))
		audit := textOf(t, ctx, "#audit-records")
		if !strings.Contains(audit, "device revoked by admin") || !strings.Contains(audit, "sensor-9") || strings.Contains(audit, "provision") {
			t.Fatalf("audit page for the revocation:\n%s", audit)
		}
	})

	// The overview counts what happened and draws the chart.
	t.Run("overview", func(t *testing.T) {
		run1(t, ctx, "overview", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
		if n := textOf(t, ctx, "#devices-active"); n != "1" {
			t.Errorf("overview: %s active devices, want 1 (sensor-7; sensor-9 is revoked)", n)
		}
		reasons := textOf(t, ctx, "#reasons")
		if !strings.Contains(reasons, "user not allowed on device") {
			t.Errorf("overview refusals:\n%s", reasons)
		}
		if os.Getenv("TAGAUTH_SCREENSHOTS") == "1" {
			run1(t, ctx, "viewport", chromedp.EmulateViewport(1280, 900))
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("screenshot: %v", err)
			}
			out := filepath.Join("..", "docs", "img", "console-overview.png")
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d bytes)", out, len(png))
		}
	})

	// Log out: the session is gone.
	t.Run("log out", func(t *testing.T) {
		run1(t, ctx, "logout", chromedp.Click(chromedp.CSS(".logout button")), chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.Navigate(base+"users"), chromedp.WaitVisible(chromedp.CSS("#token")))
	})
}

// TestDeviceMetrics: "tagauth device --metrics PORT" serves the agent's
// metrics on loopback, and they count the logins and tasks that happened.
func TestDeviceMetrics(t *testing.T) {
	w := newWorld(t, "hardened")
	dev := start(t, nil, "device", "--cred", filepath.Join(w.dir, "sensor-7.json"), "--listen", "127.0.0.1:0", "--metrics", "0")
	metricsURL := dev.waitLine(`metrics at (http://127\.0\.0\.1:\d+/metrics)`)[1]
	at := dev.waitLine(`serving CoAP on (\S+),`)[1]
	user := func(args ...string) (int, string) {
		code, out, errs := run(t, w.userPW, append([]string{"user", args[0], "--card", w.card, "--device", at, "--did", "sensor-7",
			"--ack-timeout", "200ms", "--timeout", "10s"}, args[1:]...)...)
		return code, out + errs
	}
	for range 2 {
		if code, out := user("task", "echo", "hi"); code != 0 {
			t.Fatalf("task: %s", out)
		}
	}
	if code, _ := user("task", "no.such.task"); code == 0 {
		t.Fatal("unknown task succeeded")
	}
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	for _, line := range []string{
		`tagauth_device_logins_total{outcome="established",reason="",step="m5"} 3`,
		`tagauth_device_tasks_total{outcome="ok",task="echo"} 2`,
		`tagauth_device_tasks_total{outcome="refused",task="unknown"} 1`,
	} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("device metrics lack %q", line)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}
