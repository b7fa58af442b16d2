package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestMissingPackages(t *testing.T) {
	none := func(string) (string, error) { return "", errors.New("not found") }
	all := func(c string) (string, error) { return "/usr/bin/" + c, nil }
	if got := missingPackages(all); len(got) != 0 {
		t.Errorf("all present: %v", got)
	}
	got := missingPackages(none)
	want := []string{"fio", "fuse3", "libnbd-bin", "nbdfuse", "nbdkit", "qemu-utils"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	onlyFio := func(c string) (string, error) {
		if c == "fio" {
			return "", errors.New("no")
		}
		return c, nil
	}
	if got := missingPackages(onlyFio); !slices.Equal(got, []string{"fio"}) {
		t.Errorf("got %v", got)
	}
	if m := depsMessage([]string{"fio", "nbdkit"}); !strings.Contains(m, "apt-get install -y fio nbdkit") {
		t.Errorf("message %q", m)
	}
}
