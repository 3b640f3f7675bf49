package correlator

import (
	"errors"
	"fmt"
	"time"

	"github.com/flowtrace/flowtrace/correlator/destpattern"
)

// Config tunes an Engine. Zero fields take their defaults.
type Config struct {
	// StuckAfter marks a flow's unsettled hops stuck once the flow has had no
	// activity for this long. Default 5m.
	StuckAfter time.Duration `mapstructure:"stuck_after"`
	// FlowIdle finishes a flow that has had no activity for this long.
	// Default 10m; at least StuckAfter.
	FlowIdle time.Duration `mapstructure:"flow_idle"`
	// Retain keeps a finished flow this long, so late events update it
	// rather than start a new one. Default 10m.
	Retain time.Duration `mapstructure:"retain"`
	// MaxInFlightHops bounds the hops held in memory; past it the least
	// recently active flows are evicted. Default 1,000,000.
	MaxInFlightHops int `mapstructure:"max_in_flight_hops"`
	// MaxInFlightFlows bounds the flows held in memory, finished ones
	// included. Default 200,000.
	MaxInFlightFlows int `mapstructure:"max_in_flight_flows"`
	// RetryDestinations are patterns of retry destinations, with {topic} for
	// the base destination and {attempt} for the retry number, e.g.
	// "{topic}.retry.{attempt}". A delivery from "orders.retry.2" is attempt
	// 3 of the message on "orders". Default none.
	RetryDestinations []string `mapstructure:"retry_destinations"`
	// DeadLetterDestinations are patterns of dead-letter destinations, with
	// {topic} for the base destination, e.g. "{topic}.dlq". A publish to
	// "orders.dlq" dead-letters the message on "orders". Default none.
	DeadLetterDestinations []string `mapstructure:"dead_letter_destinations"`
}

// Defaults.
const (
	DefaultStuckAfter       = 5 * time.Minute
	DefaultFlowIdle         = 10 * time.Minute
	DefaultRetain           = 10 * time.Minute
	DefaultMaxInFlightHops  = 1_000_000
	DefaultMaxInFlightFlows = 200_000
)

func (c Config) withDefaults() Config {
	if c.StuckAfter == 0 {
		c.StuckAfter = DefaultStuckAfter
	}
	if c.FlowIdle == 0 {
		c.FlowIdle = max(DefaultFlowIdle, c.StuckAfter)
	}
	if c.Retain == 0 {
		c.Retain = DefaultRetain
	}
	if c.MaxInFlightHops == 0 {
		c.MaxInFlightHops = DefaultMaxInFlightHops
	}
	if c.MaxInFlightFlows == 0 {
		c.MaxInFlightFlows = DefaultMaxInFlightFlows
	}
	return c
}

// Validate checks the configuration; errors name the key.
func (c Config) Validate() error {
	var errs []error
	for key, d := range map[string]time.Duration{"stuck_after": c.StuckAfter, "flow_idle": c.FlowIdle, "retain": c.Retain} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", key, d))
		}
	}
	full := c.withDefaults()
	if full.FlowIdle < full.StuckAfter {
		errs = append(errs, fmt.Errorf("flow_idle: must be at least stuck_after (%s), got %s", full.StuckAfter, full.FlowIdle))
	}
	if c.MaxInFlightHops < 0 {
		errs = append(errs, fmt.Errorf("max_in_flight_hops: must not be negative, got %d", c.MaxInFlightHops))
	}
	if c.MaxInFlightFlows < 0 {
		errs = append(errs, fmt.Errorf("max_in_flight_flows: must not be negative, got %d", c.MaxInFlightFlows))
	}
	for i, p := range c.RetryDestinations {
		if _, err := destpattern.Compile(p, true); err != nil {
			errs = append(errs, fmt.Errorf("retry_destinations[%d]: %w", i, err))
		}
	}
	for i, p := range c.DeadLetterDestinations {
		if _, err := destpattern.Compile(p, false); err != nil {
			errs = append(errs, fmt.Errorf("dead_letter_destinations[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}
