package gateway

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tagauth/tagauth/internal/atomicfile"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// The in-memory replay cache dies with the process. Without care, a login
// accepted just before a restart could be replayed just after it. A clean
// shutdown therefore saves the live entries to DATA/replay.state and the
// next start restores them; a DATA/running marker, removed only by a clean
// shutdown, tells the next start that the previous one crashed, in which
// case the cache is fenced: logins whose T1 the lost cache might have seen
// are answered busy for about dT. Shared (Redis) caches need none of this.
const (
	replayStateFile = "replay.state"
	runningFile     = "running"
)

// openReplayState restores c from the data directory, or fences it after
// a crash, and marks the gateway running.
func openReplayState(c *replay.Cache, cfg *Config, log *slog.Logger) {
	dir := cfg.DataDir
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	ms := uint64(now().UnixMilli())
	window := cfg.Window
	if window <= 0 {
		window = protocol.DefaultWindow
	}
	fence := func(why string) {
		c.Fence(ms + 2*uint64(window/time.Millisecond))
		log.Warn(why+": logins from before this start are refused (busy) for one window", "window", window.String())
	}
	_, err := os.Stat(filepath.Join(dir, runningFile))
	crashed := err == nil
	state, err := os.ReadFile(filepath.Join(dir, replayStateFile))
	switch {
	case crashed:
		fence("the previous gateway run did not stop cleanly and its replay cache is lost")
	case err == nil:
		if rerr := c.Restore(bytes.NewReader(state), ms); rerr != nil {
			fence("the saved replay cache is unreadable (" + rerr.Error() + ")")
		} else {
			log.Info("replay cache restored from the previous run", "entries", c.Len())
		}
	case !errors.Is(err, fs.ErrNotExist):
		fence("the saved replay cache cannot be read (" + err.Error() + ")")
	}
	os.Remove(filepath.Join(dir, replayStateFile))
	if err := atomicfile.Write(filepath.Join(dir, runningFile), []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		log.Warn("cannot write the running marker; a crash will not be detected", "err", err.Error())
	}
}

// saveReplayState saves c into the data directory and removes the running
// marker. It runs on a clean shutdown, after the last verify.
func saveReplayState(c *replay.Cache, cfg *Config, log *slog.Logger) {
	var buf bytes.Buffer
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	if err := c.Save(&buf, uint64(now().UnixMilli())); err == nil {
		err = atomicfile.Write(filepath.Join(cfg.DataDir, replayStateFile), buf.Bytes())
		if err != nil {
			log.Warn("cannot save the replay cache; the next start will refuse old logins for one window", "err", err.Error())
			return
		}
	}
	os.Remove(filepath.Join(cfg.DataDir, runningFile))
}
