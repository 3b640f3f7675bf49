// Package correlatorconnector is the collector wrapper of the correlator
// engine: a connector with traces in, hop and flow records (logs) and
// metrics out.
package correlatorconnector
