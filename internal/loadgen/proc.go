package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcessCPU returns the CPU time (user plus system, all threads) that
// process pid has used so far, read from /proc/PID/stat. Its resolution
// is 10 ms, so a window should last seconds.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d: %w (Linux /proc needed)", pid, err)
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ProcessRSS returns the resident set size of process pid in bytes.
func ProcessRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// CPUMeter samples a process's CPU time at a window's start and end.
type CPUMeter struct {
	PID        int
	start, end time.Duration
	err        error
}

// Start samples the start of the window.
func (m *CPUMeter) Start() {
	if m == nil || m.PID == 0 {
		return
	}
	m.start, m.err = ProcessCPU(m.PID)
}

// Stop samples the end of the window.
func (m *CPUMeter) Stop() {
	if m == nil || m.PID == 0 || m.err != nil {
		return
	}
	m.end, m.err = ProcessCPU(m.PID)
}

// Used is the CPU time used in the window, or false when unknown.
func (m *CPUMeter) Used() (time.Duration, bool) {
	if m == nil || m.PID == 0 || m.err != nil || m.end < m.start {
		return 0, false
	}
	return m.end - m.start, true
}

// Child is a server process the bench started: a gateway, a UDP echo
// server or a TLS server. It is killed when the bench exits, even by a
// signal (Linux: the parent-death signal).
type Child struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex
	lines  []string
	stderr bytes.Buffer
}

// StartChild starts exe with args and waits (up to 30 s) until its
// standard output has printed a line for each of the patterns, whose
// first submatches it returns. Standard error is kept for error messages.
func StartChild(name, exe string, args []string, env []string, patterns ...string) (*Child, []string, error) {
	c := &Child{Name: name, cmd: exec.Command(exe, args...), done: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = lockedWriter{&c.mu, &c.stderr}
	setParentDeath(c.cmd)
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting the %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
		_ = c.cmd.Wait()
		close(c.done)
	}()
	got := make([]string, len(patterns))
	deadline := time.Now().Add(30 * time.Second)
	for i, p := range patterns {
		rx := regexp.MustCompile(p)
		for {
			if m := c.find(rx); m != nil {
				got[i] = m[1]
				break
			}
			select {
			case <-c.done:
				return nil, nil, fmt.Errorf("the %s exited before it was ready: %s", name, c.Stderr())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				c.Stop()
				return nil, nil, fmt.Errorf("the %s did not print %q within 30 s: %s", name, p, c.Stderr())
			}
		}
	}
	return c, got, nil
}

func (c *Child) find(rx *regexp.Regexp) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if m := rx.FindStringSubmatch(l); m != nil {
			return m
		}
	}
	return nil
}

// PID is the child's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Stderr returns what the child wrote to standard error (its last 2 KiB).
func (c *Child) Stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stderr.String()
	if len(s) > 2048 {
		s = "..." + s[len(s)-2048:]
	}
	return strings.TrimSpace(s)
}

// Alive reports whether the child is still running.
func (c *Child) Alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Stop asks the child to exit (SIGTERM) and kills it after 10 s.
func (c *Child) Stop() error {
	if !c.Alive() {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return errors.New("the " + c.Name + " did not stop within 10 s of SIGTERM and was killed")
	}
}

// Wait waits for the child to exit or ctx to end.
func (c *Child) Wait(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
