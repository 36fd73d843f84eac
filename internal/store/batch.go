package store

import (
	"context"
	"fmt"

	"github.com/tagauth/tagauth/protocol"
)

// Bulk provisioning (tagauth gateway provision --from FILE): a capability
// that each backend implements in a file of its own, so that a batch of
// devices is created all or none, in one transaction, under the same
// rules as CreateDevice.

// DeviceBatcher is implemented by stores that can create many devices in
// one transaction (both backends do).
type DeviceBatcher interface {
	// CreateDevices registers every device of ds, active, or none of
	// them. Each device obeys CreateDevice's rules (ErrExists,
	// ErrNamespace under classic, ErrInvalid); two devices of ds with
	// one id are ErrExists too. The first device refused is named by a
	// *RowError (its index in ds) that wraps the reason. A change is
	// announced on the feed for every device created. An empty ds
	// changes nothing.
	CreateDevices(ctx context.Context, ds []Device, profile protocol.Profile) error
}

// RowError names the device of a batch that made it fail; it wraps the
// store's reason (ErrExists, ErrNamespace, ErrInvalid), so errors.Is sees
// through it.
type RowError struct {
	Index int    // the device's index in the batch
	ID    string // its id
	Err   error
}

func (e *RowError) Error() string {
	return fmt.Sprintf("device %d of the batch (%q): %v", e.Index+1, e.ID, e.Err)
}

func (e *RowError) Unwrap() error { return e.Err }

// CheckDevices validates a batch for CreateDevices before any store is
// touched: every device as CheckDevice, and no id twice. The error is a
// *RowError.
func CheckDevices(ds []Device) error {
	seen := make(map[string]int, len(ds))
	for i := range ds {
		if err := CheckDevice(&ds[i]); err != nil {
			return &RowError{Index: i, ID: ds[i].ID, Err: err}
		}
		if j, ok := seen[ds[i].ID]; ok {
			return &RowError{Index: i, ID: ds[i].ID, Err: fmt.Errorf("%w: device %q is also device %d of the batch", ErrExists, ds[i].ID, j+1)}
		}
		seen[ds[i].ID] = i
	}
	return nil
}
