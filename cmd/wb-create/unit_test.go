package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const unitFile = "../../dist/systemd/writeboost@.service"

// TestSystemdUnit: the shipped unit is what wb-create expects of systemd
// (Type=notify, the volume table, no restart after a refused start), and
// systemd-analyze verify finds nothing to say about it.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"Type=notify\n", "ExecStart=/usr/local/sbin/wb-create --tab " + defaultTab + " %i\n",
		"Restart=on-abnormal\n", "RestartPreventExitStatus=1 2\n", "TimeoutStopSec=", "WatchdogSec="} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q", unitFile, want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not installed: the unit cannot be verified; scripts/deps.sh installs it (Debian package systemd)")
	}
	// verify wants ExecStart to exist: point it at this test binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "writeboost@.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/sbin/wb-create", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", p).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
}
