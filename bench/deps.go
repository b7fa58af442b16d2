package main

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"
)

// tools maps each program the benchmark runs to the Debian package that
// ships it (scripts/deps.sh has the same table for the whole project).
var tools = map[string]string{
	"fio":         "fio",
	"nbdkit":      "nbdkit",
	"nbdinfo":     "libnbd-bin",
	"qemu-nbd":    "qemu-utils",
	"nbdfuse":     "nbdfuse",
	"fusermount3": "fuse3",
}

// missingPackages returns the Debian packages whose programs are not on PATH.
func missingPackages(lookPath func(string) (string, error)) []string {
	set := map[string]bool{}
	for cmd, pkg := range tools {
		if _, err := lookPath(cmd); err != nil {
			set[pkg] = true
		}
	}
	var pkgs []string
	for p := range set {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	return pkgs
}

// toolVersion returns the first line of `cmd --version`, for the JSON file.
func toolVersion(cmd string) string {
	out, err := exec.Command(cmd, "--version").CombinedOutput()
	if err != nil {
		return "unknown: " + err.Error()
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func depsMessage(pkgs []string) string {
	return fmt.Sprintf("missing tools; install with: apt-get install -y %s (or run scripts/deps.sh bench as root, or pass --install-deps)",
		strings.Join(pkgs, " "))
}
