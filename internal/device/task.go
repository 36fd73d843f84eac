package device

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/protocol"
)

// TaskFunc runs one task for an authenticated user. user is the identity
// the session's login authenticated (the gateway vouched for it), never a
// value taken from the request; args are the task's arguments as sent. ctx
// ends after Config.TaskTimeout or when the agent stops. The result, or the
// text of err, goes back sealed to that user only; keep it UTF-8 text of at
// most MaxResult bytes once wrapped in the JSON answer. Handlers run
// concurrently (up to MaxTasks at once), each on a CoAP worker: a handler
// that ignores ctx holds its worker and its slot until it returns.
type TaskFunc func(ctx context.Context, user string, args []byte) ([]byte, error)

// MaxResult bounds the sealed answer's plaintext (the JSON TaskResponse) so
// that the record fits one CoAP datagram; a larger answer is replaced by an
// error saying so.
const MaxResult = 1024 - protocol.RecordOverhead

// Handle registers f for the task called name, replacing any handler of
// that name, a built-in included. It may be called while the agent runs. It
// panics on an empty name or a nil f, which are programming errors.
func (a *Agent) Handle(name string, f TaskFunc) {
	if name == "" || f == nil {
		panic("device: Handle needs a task name and a function")
	}
	a.hmu.Lock()
	defer a.hmu.Unlock()
	a.handlers[name] = f
}

func (a *Agent) handler(name string) TaskFunc {
	a.hmu.RLock()
	defer a.hmu.RUnlock()
	return a.handlers[name]
}

// serveTask handles a sealed record: find the session by sid, open, run the
// task, seal the answer.
func (a *Agent) serveTask(_ context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	rec := req.Payload
	sid, err := protocol.SessionID(a.dev.Profile(), rec)
	if err != nil {
		a.log.Debug("task refused", "from", req.From.String(), "reason", err.Error())
		return refuse(dst, rec, protocol.CodeOf(err))
	}
	s := a.lookup(sid)
	if s == nil {
		// Anyone can make up a sid: debug level, like other junk.
		a.log.Debug("task refused", "from", req.From.String(), "reason", "unknown session (never established, expired or closed)")
		return refuse(dst, rec, protocol.ErrRejected)
	}
	select {
	case a.tasks <- struct{}{}:
		defer func() { <-a.tasks }()
	default:
		a.log.Warn("task refused", "user", logID(s.user), "from", req.From.String(), "reason", "every task slot is busy")
		return refuse(dst, rec, protocol.ErrBusy)
	}
	pt, err := s.s.Open(nil, rec)
	if err != nil {
		if errors.Is(err, protocol.ReasonSessionExpired) {
			a.end(sid, s)
		}
		a.log.Info("task refused", "user", logID(s.user), "from", req.From.String(), "code", protocol.CodeOf(err).String(), "reason", err.Error())
		return refuse(dst, rec, protocol.CodeOf(err))
	}
	resp := a.runTask(s.user, pt)
	clear(pt)
	out, err := json.Marshal(resp)
	if err == nil && len(out) > MaxResult {
		out, err = json.Marshal(coapbind.TaskResponse{Error: fmt.Sprintf("result too large (%d bytes of JSON, limit %d)", len(out), MaxResult)})
	}
	if err != nil {
		a.log.Error("task answer cannot be encoded", "user", logID(s.user), "err", err.Error())
		return refuse(dst, rec, protocol.ErrInternal)
	}
	sealed, err := s.s.Seal(dst, out)
	clear(out)
	if err != nil { // the session expired while the task ran
		a.end(sid, s)
		a.log.Info("task answer dropped", "user", logID(s.user), "reason", err.Error())
		return refuse(dst, rec, protocol.CodeOf(err))
	}
	return coap.Changed, sealed
}

// runTask decodes a task request and runs its handler. Failures become an
// answer with ok false: the request was authenticated, so the user is told
// what went wrong over the sealed channel.
func (a *Agent) runTask(user string, pt []byte) coapbind.TaskResponse {
	var tr coapbind.TaskRequest
	dec := json.NewDecoder(bytes.NewReader(pt))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil || dec.More() || tr.Task == "" {
		a.log.Info("task", "user", logID(user), "outcome", "refused", "reason", "request is not a JSON task object")
		a.metrics.task(taskInvalid, "refused")
		return coapbind.TaskResponse{Error: `task request must be one JSON object {"task":NAME,"args":STRING}`}
	}
	f := a.handler(tr.Task)
	if f == nil {
		a.log.Info("task", "user", logID(user), "task", logName(tr.Task), "outcome", "refused", "reason", "unknown task")
		a.metrics.task(taskUnknown, "refused")
		return coapbind.TaskResponse{Error: fmt.Sprintf("unknown task %q", logName(tr.Task))}
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.TaskTimeout)
	defer cancel()
	res, err := call(ctx, f, user, []byte(tr.Args))
	if err != nil {
		a.log.Info("task", "user", logID(user), "task", tr.Task, "outcome", "failed", "reason", err.Error())
		a.metrics.task(tr.Task, "failed")
		return coapbind.TaskResponse{Error: err.Error()}
	}
	a.log.Info("task", "user", logID(user), "task", tr.Task, "outcome", "ok")
	a.metrics.task(tr.Task, "ok")
	return coapbind.TaskResponse{OK: true, Result: string(res)}
}

// call runs f, turning a panic into an error so that one faulty handler
// answers its user instead of a bare 5.00.
func call(ctx context.Context, f TaskFunc, user string, args []byte) (res []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("task handler failed: %v", p)
		}
	}()
	return f(ctx, user, args)
}

// logName shortens a task name chosen by the user, and writes an odd one
// in hex (logID), before it is logged or echoed.
func logName(s string) string {
	const limit = 64
	if len(s) > limit {
		return logID(s[:limit]) + "..."
	}
	return logID(s)
}
