package device_test

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/device"
)

// An integrator registers a named task handler. The handler receives the
// user the login authenticated, never an identity the request claims, so it
// can make its own authorisation decision.
func ExampleAgent_Handle() {
	cred, err := credfile.Load("/etc/tagauth/sensor-7.json")
	if err != nil {
		log.Fatal(err) // says what is wrong with the file and what to do
	}
	agent, err := device.New(device.Config{Credential: cred, Logger: slog.Default()})
	if err != nil {
		log.Fatal(err)
	}
	agent.Handle("valve.open", func(ctx context.Context, user string, args []byte) ([]byte, error) {
		if !strings.HasPrefix(user, "operator-") {
			return nil, errors.New("only operators may open valves")
		}
		valve := string(args)
		// ... drive the actuator, honouring ctx's deadline ...
		return []byte("valve " + valve + " open"), nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := agent.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
