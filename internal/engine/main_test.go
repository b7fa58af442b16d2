package engine

import (
	"flag"
	"os"
	"testing"
)

// TestMain turns the invariant checker on for the tests (not for the
// benchmarks, which measure the engine as it ships).
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		checkInvariants = true
	}
	os.Exit(m.Run())
}
