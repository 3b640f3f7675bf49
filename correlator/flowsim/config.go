package flowsim

import (
	"errors"
	"fmt"
	"time"
)

// Scenario is a family of flows with a known shape.
type Scenario string

// The scenarios. README.md describes the flows each one generates.
const (
	// ScenarioChain: A publishes, B consumes and publishes, C consumes, … 2–5 hops.
	ScenarioChain Scenario = "chain"
	// ScenarioFanout: one publish received by 2–3 consumer groups.
	ScenarioFanout Scenario = "fanout"
	// ScenarioFanin: messages of several producers joined by a business key
	// or a correlation id.
	ScenarioFanin Scenario = "fanin"
	// ScenarioRetry: a hop fails and is redelivered, by attempt count or
	// through Kafka retry topics, then succeeds.
	ScenarioRetry Scenario = "retry"
	// ScenarioDeadLetter: a hop ends dead-lettered, rejected or expired.
	ScenarioDeadLetter Scenario = "deadletter"
	// ScenarioStuck: a message never delivered, or delivered and never settled.
	ScenarioStuck Scenario = "stuck"
	// ScenarioCallback: async HTTP, a 202 with a callback id and the later
	// callback.
	ScenarioCallback Scenario = "callback"
	// ScenarioCelery: a chain of Celery tasks with one retry.
	ScenarioCelery Scenario = "celery"
	// ScenarioLinksOnly: messages without a broker id, joined by span links
	// or, in the older convention, by the consumer span's parent.
	ScenarioLinksOnly Scenario = "linksonly"
)

// Scenarios lists every scenario.
func Scenarios() []Scenario {
	return []Scenario{
		ScenarioChain, ScenarioFanout, ScenarioFanin, ScenarioRetry, ScenarioDeadLetter,
		ScenarioStuck, ScenarioCallback, ScenarioCelery, ScenarioLinksOnly,
	}
}

// The destination patterns the generated Kafka flows use. An engine scoring
// exactly against the truth is configured with them: RetryPattern under
// retry_destinations, DeadLetterPattern under dead_letter_destinations.
const (
	// RetryPattern: a delivery from "payments.retry.1" is attempt 2 on "payments".
	RetryPattern = "{topic}.retry.{attempt}"
	// DeadLetterPattern: a publish to "payments.dlq" dead-letters the message on "payments".
	DeadLetterPattern = "{topic}.dlq"
)

// FlowNameAttribute is the span attribute that carries a flow-name hint in
// Workload.Spans; an engine reading spans takes FlowName from it.
const FlowNameAttribute = "flowtrace.flow.name"

// Config says what to generate. Zero fields take their defaults; a negative
// ShuffleWindow, DuplicateRate or LateRate turns that disorder off.
type Config struct {
	// Seed makes the workload: the same Config gives the same events. Default 0.
	Seed uint64
	// Flows is how many flows each scenario generates. Default 20.
	Flows int
	// Scenarios are the scenarios to generate. Default all (Scenarios()).
	Scenarios []Scenario
	// Start is the event time of the first flow. Default 2026-03-02T09:00:00Z.
	Start time.Time
	// FlowInterval is the mean time between flow starts; starts are a
	// Poisson process. Default 250ms.
	FlowInterval time.Duration
	// ShuffleWindow bounds reordering: an event is delivered fewer than this
	// many positions away from its place in the order spans end in.
	// Default 16; negative delivers in that order.
	ShuffleWindow int
	// DuplicateRate is the fraction of events delivered twice, the copy
	// within ShuffleWindow positions after the original. Default 0.05;
	// negative delivers each event once.
	DuplicateRate float64
	// LateRate is the fraction of events held back and delivered LateBy
	// positions later. Default 0.02; negative holds none back.
	LateRate float64
	// LateBy is how many positions a late event is held back. Default 200.
	LateBy int
	// ExportDelay is how long after a span ends it reaches the engine at the
	// earliest: the processing time of an event is at least its end plus
	// ExportDelay. Default 2s.
	ExportDelay time.Duration
}

// Defaults.
const (
	DefaultFlows         = 20
	DefaultFlowInterval  = 250 * time.Millisecond
	DefaultShuffleWindow = 16
	DefaultDuplicateRate = 0.05
	DefaultLateRate      = 0.02
	DefaultLateBy        = 200
	DefaultExportDelay   = 2 * time.Second
)

// DefaultStart is the default Config.Start.
var DefaultStart = time.Date(2026, time.March, 2, 9, 0, 0, 0, time.UTC)

// Validate checks the configuration; errors name the field in snake_case.
func (c Config) Validate() error {
	var errs []error
	known := make(map[Scenario]bool)
	for _, s := range Scenarios() {
		known[s] = true
	}
	for i, s := range c.Scenarios {
		if !known[s] {
			errs = append(errs, fmt.Errorf("scenarios[%d]: unknown scenario %q", i, s))
		}
	}
	if c.Flows < 0 {
		errs = append(errs, fmt.Errorf("flows: must not be negative, got %d", c.Flows))
	}
	if c.FlowInterval < 0 {
		errs = append(errs, fmt.Errorf("flow_interval: must not be negative, got %s", c.FlowInterval))
	}
	if c.DuplicateRate > 1 {
		errs = append(errs, fmt.Errorf("duplicate_rate: must be at most 1, got %g", c.DuplicateRate))
	}
	if c.LateRate > 1 {
		errs = append(errs, fmt.Errorf("late_rate: must be at most 1, got %g", c.LateRate))
	}
	if c.LateBy < 0 {
		errs = append(errs, fmt.Errorf("late_by: must not be negative, got %d", c.LateBy))
	}
	if c.ExportDelay < 0 {
		errs = append(errs, fmt.Errorf("export_delay: must not be negative, got %s", c.ExportDelay))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Flows == 0 {
		c.Flows = DefaultFlows
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios()
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	if c.FlowInterval == 0 {
		c.FlowInterval = DefaultFlowInterval
	}
	if c.ShuffleWindow == 0 {
		c.ShuffleWindow = DefaultShuffleWindow
	}
	c.ShuffleWindow = max(c.ShuffleWindow, 0)
	if c.DuplicateRate == 0 {
		c.DuplicateRate = DefaultDuplicateRate
	}
	c.DuplicateRate = max(c.DuplicateRate, 0)
	if c.LateRate == 0 {
		c.LateRate = DefaultLateRate
	}
	c.LateRate = max(c.LateRate, 0)
	if c.LateBy == 0 {
		c.LateBy = DefaultLateBy
	}
	if c.ExportDelay == 0 {
		c.ExportDelay = DefaultExportDelay
	}
	return c
}
