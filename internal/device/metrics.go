package device

import (
	"errors"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tagauth/tagauth/protocol"
)

// Metrics.
//
// Each agent keeps its Prometheus metrics in a registry of its own, served
// by [Agent.MetricsHandler] ("tagauth device --metrics ADDR" serves it on
// loopback, plain HTTP). Labels take values from bounded sets only: login
// steps, outcomes and reasons (protocol reason names and a few of the
// agent's own), and task names that a program registered with Handle (a
// name a user sends that no handler has is counted as "unknown").

// Reasons of the agent's own in tagauth_device_logins_total, beside the
// protocol's reason names and "gateway <wire code>" for a refusal relayed
// from the gateway.
const (
	reasonGatewayDown = "gateway unreachable"
	reasonBusy        = "busy"
	reasonNoLogin     = "no pending login for m5"
)

// Task labels for requests that name no registered task.
const (
	taskUnknown = "unknown"
	taskInvalid = "invalid request"
)

type agentMetrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	logins  *prometheus.CounterVec
	tasks   *prometheus.CounterVec

	echoChallenges prometheus.Counter
	logSuppressed  prometheus.Counter
	evicted        *prometheus.CounterVec
}

func newAgentMetrics(a *Agent) *agentMetrics {
	m := &agentMetrics{reg: prometheus.NewRegistry()}
	m.logins = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tagauth_device_logins_total",
		Help: "Login steps by outcome (established or refused), step (m1..m5) and precise reason; never a user id."},
		[]string{"outcome", "step", "reason"})
	m.tasks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tagauth_device_tasks_total",
		Help: "Tasks run for authenticated users, by task name (registered names only) and outcome (ok, failed, refused)."},
		[]string{"task", "outcome"})
	m.echoChallenges = prometheus.NewCounter(prometheus.CounterOpts{Name: "tagauth_device_echo_challenges_total",
		Help: "m1s from an address not verified lately, answered 4.01 with an Echo value (RFC 9175) instead of being relayed."})
	m.logSuppressed = prometheus.NewCounter(prometheus.CounterOpts{Name: "tagauth_device_log_lines_suppressed_total",
		Help: "Refusal log lines not written because the refusal log's rate was reached (the refusals are still counted in tagauth_device_logins_total)."})
	m.evicted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tagauth_device_user_evictions_total",
		Help: "A user's oldest session or login waiting for m5, closed because that user reached its per-user bound, by table (session, pending)."},
		[]string{"table"})
	m.reg.MustRegister(m.logins, m.tasks, m.echoChallenges, m.logSuppressed, m.evicted)
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("tagauth_device_sessions_open", "Established sessions, expired ones not yet swept included.", func() float64 { return float64(a.Stats().Sessions) })
	gauge("tagauth_device_pending_logins", "Logins between m1 and m5 (classic: m4).", func() float64 { return float64(a.Stats().Pending) })
	gauge("tagauth_device_relays_in_flight", "Logins waiting for the gateway now (at most MaxRelays).", func() float64 { return float64(len(a.relays)) })
	gauge("tagauth_device_verified_sources", "Client addresses that proved return routability lately (Echo).", func() float64 { return float64(a.verified.Len()) })
	gauge("tagauth_device_tasks_in_flight", "Task handlers running now (at most MaxTasks).", func() float64 { return float64(len(a.tasks)) })
	stat := func(name, help string, v func() uint64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tagauth_device_coap_" + name + "_total", Help: help},
			func() float64 { return float64(v()) }))
	}
	st := &a.srv.Stats
	stat("received", "CoAP datagrams read.", st.Received.Load)
	stat("malformed", "CoAP datagrams that are not CoAP messages, dropped.", st.Malformed.Load)
	stat("oversized", "CoAP datagrams over the size limit.", st.Oversized.Load)
	stat("duplicates", "Retransmitted CONs answered from the response cache.", st.Duplicates.Load)
	stat("responses", "CoAP datagrams sent.", st.Responses.Load)
	stat("dropped", "Well-formed CoAP datagrams that got no answer.", st.Dropped.Load)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
	return m
}

// login counts one login step's outcome.
func (m *agentMetrics) login(outcome, step string, err error) {
	m.logins.WithLabelValues(outcome, step, loginReason(err)).Inc()
}

// finalStep is the step that establishes a session.
func finalStep(p protocol.Profile) string {
	if p == protocol.Classic {
		return "m4"
	}
	return "m5"
}

// task counts one task request.
func (m *agentMetrics) task(name, outcome string) {
	m.tasks.WithLabelValues(name, outcome).Inc()
}

// loginReason maps a login error to a label value from a bounded set.
func loginReason(err error) string {
	if err == nil {
		return ""
	}
	var gr gatewayRefusal
	if errors.As(err, &gr) {
		return "gateway " + gr.code.String()
	}
	var le limitError
	if errors.As(err, &le) {
		return le.why
	}
	var lr localReason
	if errors.As(err, &lr) {
		switch {
		case lr.code != protocol.ErrBusy:
			return reasonNoLogin
		case strings.HasPrefix(lr.why, "gateway ") && strings.HasSuffix(lr.why, " unreachable"):
			return reasonGatewayDown
		default:
			return reasonBusy
		}
	}
	if r := protocol.ReasonOf(err); r != nil {
		return r.Name()
	}
	return protocol.CodeOf(err).String()
}

// MetricsHandler serves the agent's metrics in the Prometheus text format.
// It has no authentication of its own: serve it on loopback, or behind a
// proxy that adds some.
func (a *Agent) MetricsHandler() http.Handler { return a.metrics.handler }

// MetricsRegistry is the agent's Prometheus registry.
func (a *Agent) MetricsRegistry() *prometheus.Registry { return a.metrics.reg }
