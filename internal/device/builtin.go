package device

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"time"
	"unicode/utf8"
)

func (a *Agent) registerBuiltins() {
	a.Handle("echo", echoTask)
	a.Handle("sensor.read", a.sensorRead)
	a.Handle("control.write", a.controlWrite)
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
