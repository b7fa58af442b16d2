package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The emulated 7200 rpm disk of issue 7: one client, two nbdkit threads (so at
// most two requests in service), 7 ms per read or write, 1200 Mbit/s. The
// delay filter has no seek model, so only fewer and larger requests help.
var hddFilters = []string{"--filter=limit", "--filter=multi-conn", "--filter=rate", "--filter=delay"}
var hddParams = []string{"limit=1", "multi-conn-mode=disable", "wdelay=7ms", "rdelay=7ms", "rate=1200M", "burstiness=0.1"}

// env is what every phase needs: the process owner, the temp dir, binaries.
type env struct {
	ps     *procs
	dir    string // temp dir: images, sockets, logs
	bin    string // writeboost binaries
	runDir string // $WB_RUN_DIR for wb-create
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// sparse creates (or truncates) a sparse file of size bytes.
func sparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("truncate %s: %w", path, err)
	}
	return f.Close()
}

// laidOut creates a file of size bytes with every block written (zeros)
// and synced: a cache file stands for an SSD, which has no holes to
// allocate on a first write, and the physical references run on a file
// fio laid out the same way. On a sparse cache file each write into a hole
// pays the file system's allocation, and a FLUSH its journal commit (a 4
// KiB write + fdatasync: ~250-300 µs sparse against ~120 µs laid out, here).
func laidOut(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zero := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(zero)) {
		if _, err := f.Write(zero[:min(int64(len(zero)), size-off)]); err != nil {
			f.Close()
			return fmt.Errorf("lay out %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("lay out %s: %w", path, err)
	}
	return f.Close()
}

// nbdUnixURI is the URI fio's nbd engine connects to.
func nbdUnixURI(export, sock string) string {
	return "nbd+unix:///" + export + "?socket=" + sock
}

// server is one NBD export the workloads run against, with the processes
// that make it (stopped in reverse order by procs).
type server struct {
	key   string // short name used in row ids
	label string // what the table shows
	uri   string
	procs []*proc
	files []string // images removed once the server is stopped
}

// stop stops the server's processes, newest first.
func (s *server) stop(e *env) error {
	var first error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := e.ps.stop(s.procs[i], 60*time.Second); err != nil && first == nil {
			first = fmt.Errorf("stop %s: %w", s.procs[i].name, err)
		}
	}
	s.procs = nil
	return first
}

// startNbdkit runs nbdkit in the foreground on a unix socket and waits until
// it listens. --exit-with-parent is a second safety net beside Pdeathsig.
func (e *env) startNbdkit(ctx context.Context, name, sock string, args ...string) (*proc, error) {
	os.Remove(sock)
	argv := append([]string{"nbdkit", "-f", "--exit-with-parent", "-U", sock}, args...)
	p, err := e.ps.start(name, startOpts{env: []string{"TMPDIR=" + e.dir}}, argv...)
	if err != nil {
		return nil, err
	}
	if err := waitSocket(ctx, p, sock, 15*time.Second); err != nil {
		e.ps.stop(p, time.Second)
		return nil, err
	}
	return p, nil
}

// startHDD starts the emulated disk over img. With statsFile set, the stats
// filter sits outermost and counts every request the disk's client sends;
// nbdkit writes the file when it exits.
func (e *env) startHDD(ctx context.Context, name, img, statsFile string) (*proc, string, error) {
	sock := e.path(name + ".sock")
	args := []string{"-t", "2"}
	if statsFile != "" {
		args = append(args, "--filter=stats")
	}
	args = append(args, hddFilters...)
	args = append(args, "file", img)
	args = append(args, hddParams...)
	if statsFile != "" {
		args = append(args, "statsfile="+statsFile)
	}
	p, err := e.startNbdkit(ctx, name, sock, args...)
	return p, sock, err
}

// mountHDD exposes the disk behind sock as the file MNT/disk with nbdfuse
// (one connection, as issue 7 prescribes). Stopping the proc unmounts first.
func (e *env) mountHDD(ctx context.Context, name, sock string) (*proc, string, error) {
	mnt := e.path(name + ".mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, "", err
	}
	file := filepath.Join(mnt, "disk")
	p, err := e.ps.start(name, startOpts{}, "nbdfuse", "-C", "1", file, "--unix", sock)
	if err != nil {
		return nil, "", err
	}
	p.onStop = func() {
		// nbdfuse exits once unmounted; SIGTERM follows if it does not.
		if err := exec.Command("fusermount3", "-u", mnt).Run(); err != nil {
			exec.Command("fusermount3", "-uz", mnt).Run() // busy: detach lazily
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	if err := waitFile(ctx, p, file, 15*time.Second); err != nil {
		e.ps.stop(p, time.Second)
		return nil, "", err
	}
	return p, file, nil
}

// startWB runs wb-create --reformat --force NAME BACKING CACHE [KEY
// VALUE]... and waits for its ready line. --force: the NBD phase's caches
// are sparse files larger than the region on purpose (an epoch's writes
// fit in the ring), which wb-create otherwise refuses as a likely swap of
// BACKING and CACHE.
func (e *env) startWB(ctx context.Context, name, backing, cache string, kv ...string) (*proc, string, error) {
	argv := append([]string{filepath.Join(e.bin, "wb-create"), "--reformat", "--force", name, backing, cache}, kv...)
	p, err := e.ps.start("wb-create-"+name, startOpts{env: []string{"WB_RUN_DIR=" + e.runDir, "TMPDIR=" + e.dir}, readyWord: "ready"}, argv...)
	if err != nil {
		return nil, "", err
	}
	if err := waitReady(ctx, p, 60*time.Second); err != nil {
		e.ps.stop(p, 30*time.Second)
		return nil, "", err
	}
	sock := filepath.Join(e.runDir, name+".sock")
	// "ready" means it listens; a probe connection would only log a failed
	// handshake.
	if err := waitFile(ctx, p, sock, 10*time.Second); err != nil {
		e.ps.stop(p, 30*time.Second)
		return nil, "", err
	}
	return p, nbdUnixURI(name, sock), nil
}

// wbTool runs wb-status or wb-message against a running volume.
func (e *env) wbTool(ctx context.Context, tool string, args ...string) ([]byte, error) {
	argv := append([]string{filepath.Join(e.bin, tool)}, args...)
	return e.ps.run(ctx, tool, startOpts{env: []string{"WB_RUN_DIR=" + e.runDir}}, argv...)
}

func sizeArg(n int64) string { return strconv.FormatInt(n, 10) }
