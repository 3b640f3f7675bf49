// Package flowsim generates message flows of known shape as events and as
// OpenTelemetry spans, with the ground truth the correlator should build from
// them, and scores the correlator's hops and flows against that truth.
//
// The truth follows the contract in correlator/README.md. Generate is
// deterministic for a Config: the same seed gives the same workload.
package flowsim
