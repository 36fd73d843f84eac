package loadgen

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// Target is the gateway under load.
type Target struct {
	// CoAP is the host:port of the gateway's /tagauth/verify.
	CoAP string
	// AdminURL, Fingerprint and Token reach its admin API, to enrol the
	// simulated users and provision the simulated devices.
	AdminURL, Fingerprint, Token string
	// PID is the gateway's process id on this host, for its CPU time per
	// verify; 0 when unknown (then no CPU figure is reported).
	PID int
	// HeapURL, when set, answers GET with the gateway's heap statistics
	// after a garbage collection (the gateway's hidden --debug-addr).
	HeapURL string
}

// BenchKDF are the Argon2id parameters of the simulated cards: the
// smallest the spec allows, so that enrolling hundreds of users takes
// a second. A card's password function runs once, at unlock, before any
// login; the report gives the default parameters' unlock time apart.
var BenchKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// Fleet is the simulated users and devices, enrolled and provisioned on
// the target at the start of a run.
type Fleet struct {
	Profile protocol.Profile
	Group   string
	Users   []*protocol.User
	Devices []credfile.Credential
	// Unlock is the mean time to unlock one simulated card (Argon2id with
	// BenchKDF under hardened).
	Unlock time.Duration
}

// Close wipes the unlocked cards.
func (f *Fleet) Close() {
	for _, u := range f.Users {
		u.Close()
	}
}

// fastRand is a ChaCha8 generator seeded from crypto/rand and safe for
// concurrent use. It draws the simulated cards' K_i and n_i: a system
// call per draw would make the load client, not the gateway, the
// bottleneck on a small machine.
type fastRand struct {
	mu sync.Mutex
	r  *rand.ChaCha8
}

func newFastRand() *fastRand {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	return &fastRand{r: rand.NewChaCha8(seed)}
}

func (f *fastRand) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r.Read(p)
}

// clientConfig is the protocol configuration of the simulated cards and
// devices.
func clientConfig() protocol.Config {
	return protocol.Config{Now: time.Now, Rand: newFastRand()}
}

// Provision enrols users simulated users ("user-0000"...) and provisions
// devices simulated devices ("dev-0000"...) on the target, puts the
// devices in one group and grants it to every user, and unlocks every
// card. A non-empty run prefixes every name ("RUN-user-0000"), so that
// runs against one long-lived gateway do not collide. Names are short, as
// real ones are: identities travel in m1 and m2, so their length is part
// of the bytes per login.
func Provision(ctx context.Context, t Target, users, devices int, run string) (*Fleet, error) {
	prefix := "bench"
	if run != "" {
		prefix = run
		run += "-"
	}
	if users < 1 || devices < 1 {
		return nil, fmt.Errorf("loadgen: need at least one user and one device")
	}
	ac, err := adminapi.NewClient(t.AdminURL, t.Fingerprint, t.Token, 30*time.Second)
	if err != nil {
		return nil, err
	}
	hc := ac.HTTP
	info, err := ac.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("loadgen: asking the gateway for its profile: %w", err)
	}
	p, err := protocol.ParseProfile(info.Profile)
	if err != nil {
		return nil, fmt.Errorf("loadgen: gateway profile: %w", err)
	}
	f := &Fleet{Profile: p, Group: prefix, Users: make([]*protocol.User, users), Devices: make([]credfile.Credential, devices)}
	cfg := clientConfig()
	var unlock time.Duration
	var umu sync.Mutex

	jobs := make(chan func() error)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for job := range jobs {
				if err := job(); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	feed := func(n int, job func(i int) error) error {
		for i := range n {
			select {
			case jobs <- func() error { return job(i) }:
			case err := <-errc:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	err = feed(devices, func(i int) error {
		req := adminapi.DeviceRequest{ID: fmt.Sprintf("%sdev-%04d", run, i), Group: prefix}
		raw, err := ac.Provision(ctx, req)
		if err != nil {
			return fmt.Errorf("loadgen: provisioning %s: %w", req.ID, err)
		}
		defer clear(raw)
		cred, err := credfile.Unmarshal(raw)
		if err != nil {
			return fmt.Errorf("loadgen: credential of %s: %w", req.ID, err)
		}
		f.Devices[i] = cred
		return nil
	})
	if err == nil {
		err = feed(users, func(i int) error {
			id := fmt.Sprintf("%suser-%04d", run, i)
			pw := "bench password " + id
			code, err := ac.EnrolCode(ctx, adminapi.EnrolCodeRequest{User: id})
			if err != nil {
				return fmt.Errorf("loadgen: enrolment code for %s: %w", id, err)
			}
			card, err := userclient.Enroll(ctx, hc, t.AdminURL, code.Code, id, pw, p, BenchKDF, cfg)
			if err != nil {
				return fmt.Errorf("loadgen: enrolling %s: %w", id, err)
			}
			if err := ac.Grant(ctx, adminapi.Grant{User: id, Group: prefix}); err != nil {
				return fmt.Errorf("loadgen: granting %s: %w", id, err)
			}
			start := time.Now()
			u, err := protocol.Unlock(card, pw, cfg)
			if err != nil {
				return fmt.Errorf("loadgen: unlocking %s: %w", id, err)
			}
			umu.Lock()
			unlock += time.Since(start)
			umu.Unlock()
			f.Users[i] = u
			return nil
		})
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	f.Unlock = unlock / time.Duration(users)
	return f, nil
}

// offlineFleet makes, in memory and under a random master key, a fleet
// of one user and one device named as the first of Provision's
// ("user-0000", "dev-0000"): what a baseline needs to size its datagrams
// like the gateway's when no gateway runs.
func offlineFleet(p protocol.Profile) (*Fleet, error) {
	cfg := clientConfig()
	mk := protocol.MasterKey{Version: 1}
	if _, err := crand.Read(mk.Key[:]); err != nil {
		return nil, err
	}
	const pw = "bench password"
	req, err := protocol.NewRegistrationRequest(p, "user-0000", pw, BenchKDF, cfg)
	if err != nil {
		return nil, fmt.Errorf("loadgen: offline fleet: %w", err)
	}
	defer req.Wipe()
	card, err := protocol.IssueCard(&req, mk, cfg)
	if err != nil {
		return nil, fmt.Errorf("loadgen: offline fleet: %w", err)
	}
	u, err := protocol.Unlock(card, pw, cfg)
	if err != nil {
		return nil, fmt.Errorf("loadgen: offline fleet: %w", err)
	}
	dc, err := protocol.ProvisionDevice(p, "dev-0000", mk)
	if err != nil {
		u.Close()
		return nil, fmt.Errorf("loadgen: offline fleet: %w", err)
	}
	return &Fleet{Profile: p, Users: []*protocol.User{u}, Devices: []credfile.Credential{{DeviceCredential: dc}}}, nil
}

// UnlockDefault measures one unlock of a hardened card with the default
// Argon2id parameters (spec section 4): what a real user waits once,
// before logging in, and what the login figures leave out.
func UnlockDefault() (time.Duration, error) {
	cfg := clientConfig()
	req, err := protocol.NewRegistrationRequest(protocol.Hardened, "bench-unlock", "bench password", protocol.DefaultKDF, cfg)
	if err != nil {
		return 0, err
	}
	defer req.Wipe()
	var key [32]byte
	card, err := protocol.IssueCard(&req, protocol.MasterKey{Version: 1, Key: key}, cfg)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	u, err := protocol.Unlock(card, "bench password", cfg)
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	u.Close()
	return d, nil
}
