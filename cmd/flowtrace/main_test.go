package main

import (
	"encoding/json"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// childArgs, when set, makes the test binary run flowtrace itself with these
// arguments (a JSON list): the crash tests start it as a separate process
// they can kill.
const childArgs = "FLOWTRACE_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(childArgs); args != "" {
		var list []string
		if err := json.Unmarshal([]byte(args), &list); err != nil {
			panic(err)
		}
		os.Args = append([]string{"flowtrace"}, list...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
