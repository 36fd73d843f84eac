package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tagauth/tagauth/internal/coapbind"
)

func (a *Agent) registerBuiltins() {
	a.Handle("echo", echoTask)
	a.Handle("sensor.read", a.sensorRead)
	a.Handle("control.write", a.controlWrite)
	a.Handle("tasks", a.listTasks)
}

// TaskInfo describes one task in the answer of the built-in task "tasks"
// (a JSON array of them, sorted by name), so that a user can ask a device
// what it offers.
type TaskInfo struct {
	Name  string `json:"name"`
	Args  string `json:"args,omitempty"`  // the arguments, as a synopsis
	About string `json:"about,omitempty"` // one line
}

// builtinTasks documents the built-in tasks. A task an integrator registers
// with Handle is listed by name only; one registered under a built-in's
// name keeps the built-in's description.
var builtinTasks = map[string]TaskInfo{
	"echo":          {Args: "[TEXT]", About: "returns TEXT"},
	"sensor.read":   {Args: "[temperature|humidity]", About: "a simulated sensor reading (JSON)"},
	"control.write": {Args: "INSTRUCTION", About: "records an instruction (UTF-8, 256 bytes at most); answers ok"},
	"tasks":         {Args: "[PREFIX]", About: "lists this device's tasks (JSON)"},
}

// listTasks is the tasks task: args, if any, is a prefix that the names
// listed must start with. The list must fit the sealed answer (MaxResult):
// when the descriptions would not, the names alone go, and when the names
// would not either, the last entry is "..." and says how many were left
// out, so that the user can ask again with a prefix.
func (a *Agent) listTasks(_ context.Context, _ string, args []byte) ([]byte, error) {
	prefix := string(args)
	a.hmu.RLock()
	list := make([]TaskInfo, 0, len(a.handlers))
	for name := range a.handlers {
		if strings.HasPrefix(name, prefix) {
			ti := builtinTasks[name]
			ti.Name = name
			list = append(list, ti)
		}
	}
	a.hmu.RUnlock()
	slices.SortFunc(list, func(x, y TaskInfo) int { return strings.Compare(x.Name, y.Name) })
	out, err := json.Marshal(list)
	if err != nil || answerSize(out) <= MaxResult {
		return out, err
	}
	for i := range list {
		list[i].Args, list[i].About = "", ""
	}
	for n := len(list); n >= 0; n-- {
		part := list[:n]
		if n < len(list) {
			part = append(part[:n:n], TaskInfo{Name: "...", About: fmt.Sprintf("%d more: ask tasks PREFIX", len(list)-n)})
		}
		if out, err = json.Marshal(part); err != nil || answerSize(out) <= MaxResult {
			return out, err
		}
	}
	return nil, errors.New("no room to list the tasks")
}

// answerSize is the size of the JSON answer that carries result.
func answerSize(result []byte) int {
	b, _ := json.Marshal(coapbind.TaskResponse{OK: true, Result: string(result)})
	return len(b)
}

// echoTask returns its arguments: the simplest proof that a sealed round trip
// works.
func echoTask(_ context.Context, _ string, args []byte) ([]byte, error) {
	return args, nil
}

// Reading is a sensor reading as sensor.read returns it (JSON).
type Reading struct {
	Sensor    string    `json:"sensor"`
	Value     float64   `json:"value"`
	Unit      string    `json:"unit"`
	Time      time.Time `json:"time"`
	Simulated bool      `json:"simulated"` // always true: there is no hardware
}

// SensorReading returns the simulated reading of sensor ("temperature", the
// default when sensor is empty, or "humidity") at time t. There is no
// hardware behind it: the value is a deterministic function of t, a daily
// cycle plus a ten-minute ripple, so that a demo shows it change and a test
// can predict it.
func SensorReading(sensor string, t time.Time) (Reading, error) {
	ms := float64(t.UnixMilli())
	day := math.Sin(2 * math.Pi * math.Mod(ms, 86_400_000) / 86_400_000)
	ripple := math.Sin(2 * math.Pi * math.Mod(ms, 600_000) / 600_000)
	r := Reading{Sensor: sensor, Time: t.UTC().Truncate(time.Millisecond), Simulated: true}
	switch sensor {
	case "", "temperature":
		r.Sensor, r.Unit, r.Value = "temperature", "celsius", 21+3*day+0.4*ripple
	case "humidity":
		r.Unit, r.Value = "percent", 50-10*day+2*ripple
	default:
		return Reading{}, errors.New("unknown sensor (have temperature, humidity)")
	}
	r.Value = math.Round(r.Value*100) / 100
	return r, nil
}

// sensorRead is the sensor.read task: args name the sensor.
func (a *Agent) sensorRead(_ context.Context, _ string, args []byte) ([]byte, error) {
	r, err := SensorReading(string(args), a.cfg.Now())
	if err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// Control is one instruction received by control.write.
type Control struct {
	Time        time.Time
	User        string // the authenticated user who sent it
	Instruction string
}

// maxControls bounds the control log; older entries are forgotten.
const maxControls = 1000

// maxInstruction bounds one instruction, in bytes.
const maxInstruction = 256

// controlWrite is the control.write task: it records the instruction with
// the authenticated user and the time, as an actuator would before acting.
func (a *Agent) controlWrite(_ context.Context, user string, args []byte) ([]byte, error) {
	switch {
	case len(args) == 0:
		return nil, errors.New("control.write needs an instruction")
	case len(args) > maxInstruction:
		return nil, errors.New("instruction longer than 256 bytes")
	case !utf8.Valid(args):
		return nil, errors.New("instruction is not UTF-8 text")
	}
	c := Control{Time: a.cfg.Now(), User: user, Instruction: string(args)}
	a.cmu.Lock()
	if len(a.controls) >= maxControls {
		a.controls = append(a.controls[:0], a.controls[1:]...)
	}
	a.controls = append(a.controls, c)
	a.cmu.Unlock()
	// The instruction is task data: logged only by its size.
	a.log.Info("control.write recorded", "user", logID(user), "bytes", len(args))
	return []byte("ok"), nil
}

// Controls returns the instructions control.write recorded, oldest first
// (the last 1000 at most).
func (a *Agent) Controls() []Control {
	a.cmu.Lock()
	defer a.cmu.Unlock()
	return append([]Control(nil), a.controls...)
}
