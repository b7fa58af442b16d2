package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs owns every process the harness starts. Each one runs in its own
// process group (so a terminal's ^C reaches only the harness, which then stops
// them in order) with SIGKILL as its parent-death signal (so a harness killed
// with SIGKILL leaves nothing behind), and is stopped by its PID.
type procs struct {
	logDir string

	mu   sync.Mutex // guards live
	live []*proc    // running, in start order; stopAll stops them in reverse
}

// proc is one started process. Its waiter goroutine, owned by the proc, ends
// when the process exits (stop makes sure it does) and then closes done.
type proc struct {
	name    string
	argv    []string
	cmd     *exec.Cmd
	logPath string
	out     *lockedBuffer // stdout and stderr, also copied to logPath
	done    chan struct{} // closed once the process has exited and its output is read
	err     error         // exit status; valid after done
	ready   chan struct{} // closed when a line holding readyWord appears (if set)
	onStop  func()        // runs before the process is signalled (fusermount3 -u)
	stopped bool          // guarded by procs.mu
}

// lockedBuffer is the captured output of a process, read while it still runs.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// tail returns the last n bytes of the captured output, for error messages.
func (p *proc) tail(n int) string {
	b := p.out.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

type startOpts struct {
	env       []string // added to the harness's environment
	dir       string
	readyWord string // close proc.ready when a line of output holds it as a word
}

// start launches argv under name. Output goes to logDir/name.log and to an
// in-memory buffer.
func (ps *procs) start(name string, o startOpts, argv ...string) (*proc, error) {
	logPath := filepath.Join(ps.logDir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, argv: argv, logPath: logPath, out: &lockedBuffer{}, done: make(chan struct{}), ready: make(chan struct{})}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Dir = o.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw, err := os.Pipe()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		lf.Close()
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, argv[0], err)
	}
	pw.Close() // the child holds the write end; EOF comes when it (and its children) exit
	p.cmd = cmd
	ps.mu.Lock()
	ps.live = append(ps.live, p)
	ps.mu.Unlock()
	slog.Debug("started", "name", name, "pid", cmd.Process.Pid, "argv", strings.Join(argv, " "))

	go func() {
		defer close(p.done)
		defer lf.Close()
		w := io.MultiWriter(lf, p.out)
		r := bufio.NewReader(pr)
		readyClosed := o.readyWord == ""
		if readyClosed {
			close(p.ready)
		}
		// A whole word: "already formatted" is not "ready".
		var readyRE *regexp.Regexp
		if !readyClosed {
			readyRE = regexp.MustCompile(`\b` + regexp.QuoteMeta(o.readyWord) + `\b`)
		}
		for {
			line, err := r.ReadBytes('\n')
			w.Write(line)
			if !readyClosed && readyRE.Match(line) {
				close(p.ready)
				readyClosed = true
			}
			if err != nil {
				break
			}
		}
		pr.Close()
		p.err = cmd.Wait()
	}()
	return p, nil
}

// exited reports whether p has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for p to exit on its own; on ctx's end it stops p.
func (ps *procs) wait(ctx context.Context, p *proc) error {
	select {
	case <-p.done:
		ps.forget(p)
		return p.err
	case <-ctx.Done():
		ps.stop(p, 2*time.Second)
		return ctx.Err()
	}
}

// run starts argv, waits for it and returns its output; a non-zero exit is an
// error carrying the output's tail.
func (ps *procs) run(ctx context.Context, name string, o startOpts, argv ...string) ([]byte, error) {
	p, err := ps.start(name, o, argv...)
	if err != nil {
		return nil, err
	}
	if err := ps.wait(ctx, p); err != nil {
		return p.out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, p.tail(600))
	}
	return p.out.Bytes(), nil
}

func (ps *procs) forget(p *proc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.live = slices.DeleteFunc(ps.live, func(q *proc) bool { return q == p })
}

// stop ends p: its onStop hook first, then SIGTERM to its PID, then SIGKILL
// to its PID after grace. It returns p's exit status; a process killed by our
// own SIGTERM is a clean stop.
func (ps *procs) stop(p *proc, grace time.Duration) error {
	ps.mu.Lock()
	first := !p.stopped
	p.stopped = true
	ps.mu.Unlock()
	if first && p.onStop != nil && !p.exited() {
		p.onStop()
	}
	if !p.exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			slog.Warn("SIGTERM", "name", p.name, "pid", p.cmd.Process.Pid, "err", err)
		}
		select {
		case <-p.done:
		case <-time.After(grace):
			slog.Warn("did not stop on SIGTERM; sending SIGKILL", "name", p.name, "pid", p.cmd.Process.Pid)
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	}
	ps.forget(p)
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return p.err
}

// stopAll stops every live process, newest first, so that clients go before
// their servers and servers before their backing devices.
func (ps *procs) stopAll() {
	for {
		ps.mu.Lock()
		if len(ps.live) == 0 {
			ps.mu.Unlock()
			return
		}
		p := ps.live[len(ps.live)-1]
		ps.mu.Unlock()
		if err := ps.stop(p, 10*time.Second); err != nil {
			slog.Warn("stopped with error", "name", p.name, "err", err)
		}
	}
}

// waitSocket waits until path accepts a unix connection, failing early if p
// exits first.
func waitSocket(ctx context.Context, p *proc, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before listening on %s: %v: %s", p.name, path, p.err, p.tail(600))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no listener on %s after %v: %w", p.name, path, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitReady waits for p's ready line.
func waitReady(ctx context.Context, p *proc, timeout time.Duration) error {
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited before it was ready: %v: %s", p.name, p.err, p.tail(1200))
	case <-time.After(timeout):
		return fmt.Errorf("%s: not ready after %v: %s", p.name, timeout, p.tail(1200))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitFile waits until path exists (nbdfuse creates its file once mounted).
func waitFile(ctx context.Context, p *proc, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before %s appeared: %v: %s", p.name, path, p.err, p.tail(600))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s missing after %v", p.name, path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
