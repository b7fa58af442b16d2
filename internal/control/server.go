package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/writeboost/writeboost/internal/vocab"
)

// Volume is what the control server needs of a running volume; the engine
// (through wb-create) implements it.
type Volume interface {
	// Status returns a snapshot; it must not block on I/O.
	Status() vocab.Status
	// Table returns the table line (FormatTableLine).
	Table() string
	// Message carries out a validated message (vocab.ParseMessage). A
	// remove without --force reaches it only if Status reported no NBD
	// clients (RefuseRemove); it should check again before it stops the
	// volume. It returns when done or when ctx is
	// cancelled (the client went away, or the server stops); a cancelled
	// drop_caches must leave the volume as healthy as before.
	Message(ctx context.Context, m vocab.Message) (string, error)
}

// writeTimeout bounds writing one response, so a client that stops reading
// does not hold a connection goroutine until shutdown. A variable for tests.
var writeTimeout = 10 * time.Second

// shutdownWriteTimeout bounds writing the last response once the server
// is stopping.
const shutdownWriteTimeout = time.Second

// Listen creates the control socket RUNDIR/NAME.ctl, mode 0600. The socket
// file is removed when the listener is closed. The caller must have
// claimed the name (ClaimName) so that no stale socket is in the way.
func Listen(dir, name string) (*net.UnixListener, error) {
	return ListenAccess(dir, name, Access{})
}

// ListenAccess is Listen with the socket's mode and group from a.
func ListenAccess(dir, name string, a Access) (*net.UnixListener, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	path := ControlPath(dir, name)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	// NB: between bind and chmod the socket has the umask's mode; the run
	// directory is 0700, so nobody else can reach it in that window.
	if err := a.applySocket(path); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket mode: %w", err)
	}
	l.SetUnlinkOnClose(true)
	return l, nil
}

// Serve answers control requests on l until ctx is cancelled, then closes
// l and every connection, waits for their goroutines, and returns nil. It
// returns an error if accepting fails for another reason. l must be a unix
// socket listener: only root and the owner of the directory holding the
// socket may connect (checked with SO_PEERCRED).
func Serve(ctx context.Context, l net.Listener, v Volume) error {
	return ServeAccess(ctx, l, v, Access{})
}

// ServeAccess is Serve letting in, besides, the members of a's group
// (SO_PEERCRED's gid and SO_PEERGROUPS), when a has one.
func ServeAccess(ctx context.Context, l net.Listener, v Volume, a Access) error {
	ul, ok := l.(*net.UnixListener)
	if !ok {
		return fmt.Errorf("control: serve: need a unix socket listener, got %T", l)
	}
	owner, err := socketDirOwner(ul)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait() // every connection goroutine has stopped before Serve returns
	for {
		c, err := ul.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			cancel()
			return fmt.Errorf("control: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, c, v, owner, a)
		}()
	}
}

// socketDirOwner returns the uid owning the directory of l's socket: the
// run directory.
func socketDirOwner(l *net.UnixListener) (uint32, error) {
	addr, ok := l.Addr().(*net.UnixAddr)
	if !ok || addr.Name == "" || addr.Name[0] == '@' {
		return 0, fmt.Errorf("control: serve: listener %v is not a socket file", l.Addr())
	}
	fi, err := os.Stat(filepath.Dir(addr.Name))
	if err != nil {
		return 0, fmt.Errorf("control: serve: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("control: serve: no owner for %s", filepath.Dir(addr.Name))
	}
	return st.Uid, nil
}

// peerAllowed returns the uid of the process at the other end of c and
// whether it is in a's group (false when a lets no group in).
func peerAllowed(c *net.UnixConn, a Access) (uint32, bool, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var cred *unix.Ucred
	var inGroup bool
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil && a.grantsGroup() {
			inGroup, credErr = peerInGroup(fd, cred.Gid, a.GID)
		}
	}); err != nil {
		return 0, false, err
	}
	if credErr != nil {
		return 0, false, credErr
	}
	return cred.Uid, inGroup, nil
}

// lineItem is what a connection's reader hands its handler: a request
// line, or the error that ended reading.
type lineItem struct {
	line []byte
	err  error
}

// serveConn answers the requests of one connection in order. Its reader
// goroutine owns reading: on EOF or a read error it cancels msgCtx, which
// stops a running Message (the client went away), and closes lines. The
// handler owns writing and the connection; it returns once lines is closed
// or a write fails, and waits for the reader before returning.
func serveConn(ctx context.Context, c *net.UnixConn, v Volume, owner uint32, a Access) {
	defer c.Close()
	// Server shutdown ends reading at once, which ends the reader and
	// cancels a running message; the handler still writes the response of
	// the request in hand. NB: that is how the reply to "remove", which
	// itself stops the server, reaches the client.
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	uid, inGroup, err := peerAllowed(c, a)
	if err != nil {
		refuse(ctx, c, Response{Error: fmt.Sprintf("control: peer credentials: %v", err)})
		return
	}
	if uid != 0 && uid != owner && !inGroup {
		who := "root"
		if a.grantsGroup() {
			who = "root or in group " + a.Group
		}
		refuse(ctx, c, Response{Error: fmt.Sprintf("%v: uid %d is neither %s nor the owner (uid %d) of the run directory", ErrPermission, uid, who, owner)})
		return
	}

	msgCtx, gone := context.WithCancel(ctx)
	defer gone()
	lines := make(chan lineItem)
	done := make(chan struct{}) // closed when the handler stops taking lines
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(lines)
		defer gone()
		sc := bufio.NewScanner(c)
		sc.Buffer(make([]byte, 0, 4096), MaxLineLen)
		for sc.Scan() {
			line := append([]byte(nil), sc.Bytes()...)
			select {
			case lines <- lineItem{line: line}:
			case <-done:
				return
			}
		}
		if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
			select {
			case lines <- lineItem{err: fmt.Errorf("%w: request line longer than %d bytes", ErrSyntax, MaxLineLen)}:
			case <-done:
			}
		}
	}()
	// On return: stop handing lines over, unblock a reader waiting for a
	// client that says nothing, and wait for it.
	defer wg.Wait()
	defer c.SetReadDeadline(time.Unix(1, 0))
	defer close(done)

	for it := range lines {
		if it.err != nil {
			refuse(ctx, c, Response{Error: it.err.Error()})
			return
		}
		if len(it.line) == 0 {
			continue
		}
		if ctx.Err() != nil {
			// Read before the stop but not started: the volume may be
			// closing, so it is not asked.
			writeResponse(ctx, c, Response{Error: "control: the volume is stopping"})
			return
		}
		if err := writeResponse(ctx, c, handle(msgCtx, it.line, v)); err != nil {
			return
		}
	}
}

// handle answers one request line.
func handle(ctx context.Context, line []byte, v Volume) Response {
	req, err := DecodeRequest(line)
	if err != nil {
		return Response{Error: err.Error()}
	}
	switch req.Op {
	case OpStatus:
		s := v.Status()
		return Response{OK: true, Status: &s}
	case OpTable:
		return Response{OK: true, Table: v.Table()}
	case OpMessage:
		// The request's words are parsed here, once, at the socket's edge.
		m, err := vocab.ParseMessage(req.Args)
		if err != nil {
			return Response{Error: err.Error()}
		}
		if err := ctx.Err(); err != nil {
			return Response{Error: fmt.Sprintf("%s: not started: the client is gone or the volume is stopping", m.Verb())}
		}
		if err := refuseRemove(ctx, m, v); err != nil {
			return Response{Error: err.Error()}
		}
		res, err := v.Message(ctx, m)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Result: res}
	}
	return Response{Error: fmt.Sprintf("%v: unknown op %q", ErrSyntax, req.Op)}
}

// removeSettle bounds how long a remove without --force waits for NBD
// clients to leave before it is refused. NB: a client that hung up just
// before the message (qemu-io exits, then wb-message remove runs) is seen
// by the NBD server a moment later. A variable for tests.
var removeSettle = time.Second

// refuseRemove asks RefuseRemove with the clients v's status counts, again
// every 10 ms while they do not reach 0, for at most removeSettle. A
// Volume that does not count its clients (nil) cannot refuse; wb-create's
// always counts them.
func refuseRemove(ctx context.Context, m vocab.Message, v Volume) error {
	if m.Kind != vocab.MsgRemove || m.Force {
		return nil
	}
	deadline := time.Now().Add(removeSettle)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s := v.Status()
		if s.NrClients == nil {
			return nil
		}
		err := RefuseRemove(m, s.Name, *s.NrClients)
		if err == nil || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-t.C:
		}
	}
}

// refuse writes a last response and ends the connection. It reads and
// drops what the client sent, for a while: closing a unix socket with
// unread data makes the client's read fail (ECONNRESET) before it sees
// the response.
func refuse(ctx context.Context, c *net.UnixConn, r Response) {
	if writeResponse(ctx, c, r) != nil {
		return
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(shutdownWriteTimeout))
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

// writeResponse writes one response; once the server is stopping (ctx
// done) it gives a client that does not read only shutdownWriteTimeout.
func writeResponse(ctx context.Context, c net.Conn, r Response) error {
	b, err := encodeLine(r)
	if err != nil {
		b, _ = encodeLine(Response{Error: fmt.Sprintf("control: encode response: %v", err)})
	}
	timeout := writeTimeout
	if ctx.Err() != nil {
		timeout = shutdownWriteTimeout
	}
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}
