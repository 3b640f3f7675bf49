// Command flowtrace is an OpenTelemetry Collector distribution that stitches
// asynchronous messages into end-to-end flows.
package main

import "os"

func main() {
	tuneGC(os.Getenv, availableMemory)
	// cobra has already printed the error; only the exit code is left to set.
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}
