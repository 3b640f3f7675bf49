// Package correlator stitches events about messages into hops and hops into
// end-to-end flows. README.md beside this file is the contract: how events
// join into messages, what a hop's and a flow's fields are, and when a flow
// is stuck or finished.
//
// The Engine is a plain state machine with no collector types in its API:
// events in (Add), time in (Advance), new versions of hops and flows out
// (Flush). One goroutine owns an Engine; see Sharded for spreading work over
// several.
package correlator
