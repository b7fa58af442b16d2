package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"

	"github.com/google/renameio/v2"
)

// writePidfile writes this process's pid to --pidfile, atomically (a
// reader sees the old file or the whole new one, never a partial write),
// as qemu-nbd --pid-file and nbdkit --pidfile do. Nothing without
// --pidfile.
func (cli *CLI) writePidfile() error {
	if cli.Pidfile == "" {
		return nil
	}
	if err := renameio.WriteFile(cli.Pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("--pidfile: %w", err)
	}
	return nil
}

// removePidfile removes --pidfile at a clean stop, if it still holds our
// pid (another start may have taken the path over).
func (cli *CLI) removePidfile(log *slog.Logger) {
	if cli.Pidfile == "" {
		return
	}
	b, err := os.ReadFile(cli.Pidfile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil && string(b) != strconv.Itoa(os.Getpid())+"\n" {
		log.Warn("pidfile left in place: it names another process", "pidfile", cli.Pidfile)
		return
	}
	if err := os.Remove(cli.Pidfile); err != nil {
		log.Warn("cannot remove the pidfile", "pidfile", cli.Pidfile, "err", err)
	}
}
