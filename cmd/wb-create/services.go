package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/engine"
	"github.com/writeboost/writeboost/internal/nbd"
)

// shutdownTimeout bounds how long in-flight NBD requests may take to finish
// at a clean stop before their connections are closed.
const shutdownTimeout = 5 * time.Second

// services owns the goroutines that serve the volume: one per NBD listener
// and one for the control socket. stop ends them all and waits.
type services struct {
	log       *slog.Logger
	wg        sync.WaitGroup
	errc      chan error // the first serving failure; buffered
	ctlCancel context.CancelFunc
	// attachment is the --attach device, if any; an atomic because the
	// control goroutine counts its client while run attaches it.
	attachment atomic.Pointer[nbd.Attachment]
	stopped    bool
}

func newServices(log *slog.Logger) *services {
	return &services{log: log, errc: make(chan error, 1)}
}

// clients counts the NBD connections open now: srv's on every listener,
// and the kernel's of the --attach device.
func (s *services) clients(srv *nbd.Server) int {
	n := srv.Clients()
	if a := s.attachment.Load(); a != nil {
		n += a.Clients()
	}
	return n
}

func (s *services) fail(err error) {
	select {
	case s.errc <- err:
	default:
	}
}

// serveNBD serves srv on l until srv shuts down, with TLS required when
// tlsConf is not nil.
func (s *services) serveNBD(ctx context.Context, srv *nbd.Server, l net.Listener, tlsConf *tls.Config) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		serve := srv.Serve
		if tlsConf != nil {
			serve = func(ctx context.Context, l net.Listener) error { return srv.ServeTLS(ctx, l, tlsConf) }
		}
		if err := serve(ctx, l); err != nil {
			s.fail(fmt.Errorf("NBD on %s: %w", l.Addr(), err))
		}
	}()
}

// serveControl answers control requests on l until stop.
func (s *services) serveControl(ctx context.Context, l net.Listener, v control.Volume, a control.Access) {
	ctx, s.ctlCancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := control.ServeAccess(ctx, l, v, a); err != nil {
			s.fail(fmt.Errorf("control socket: %w", err))
		}
	}()
}

// stop is the clean stop: no new connections, in-flight NBD requests
// finish (bounded by shutdownTimeout), the control socket closes, the
// kernel device detaches, the engine closes (seal, write, record, sync),
// and the run directory forgets the volume.
func (s *services) stop(srv *nbd.Server, vol *engine.Volume, dir, name string) error {
	if s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	if a := s.attachment.Load(); a != nil {
		if err := a.Detach(); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	if err := srv.Shutdown(ctx); err != nil {
		s.log.Warn("NBD connections closed before their requests finished", "err", err)
	}
	cancel()
	if s.ctlCancel != nil {
		s.ctlCancel()
	}
	s.wg.Wait()
	start := time.Now()
	if err := vol.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close volume: %w", err))
	} else {
		s.log.Info("volume closed cleanly", "name", name, "took", time.Since(start).Round(time.Millisecond))
	}
	if err := control.RemoveState(dir, name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
