package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// AcceptOptions tune the accept loop.
type AcceptOptions struct {
	// MinBackoff is the first pause after a temporary accept error (default 5ms).
	MinBackoff time.Duration
	// MaxBackoff caps the doubling pause (default 1s).
	MaxBackoff time.Duration
	// KeepAlive is the TCP keepalive period (default 30s; negative disables).
	KeepAlive time.Duration
	// Logger receives accept errors (default slog.Default()).
	Logger *slog.Logger
	// OnAcceptError is called for every temporary accept error (for metrics).
	OnAcceptError func(error)
	// Gate, when set, is called in the accept loop itself for every accepted
	// connection, in accept order, before the connection's goroutine starts
	// (for admission at accept time). It returns the connection handed to
	// handle (c or a wrapper); false drops the connection, and Gate must
	// then have closed it.
	Gate func(c net.Conn) (net.Conn, bool)
	// Conns, when set, counts the connection goroutines: Serve adds one
	// before starting each and it is done when handle returns, so a caller
	// can wait for every connection after Serve has returned.
	Conns *sync.WaitGroup
}

// Serve accepts connections from ln and calls handle for each in its own
// goroutine, until ctx is done or ln is closed (then it returns nil). Temporary
// errors, such as running out of file descriptors (EMFILE), pause the loop with
// an exponential backoff instead of spinning or giving up. TCP connections get
// TCP_NODELAY and keepalive.
func Serve(ctx context.Context, ln net.Listener, opts AcceptOptions, handle func(net.Conn)) error {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 5 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Second
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !isTemporary(err) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			if opts.OnAcceptError != nil {
				opts.OnAcceptError(err)
			}
			if backoff == 0 {
				backoff = opts.MinBackoff
			} else if backoff *= 2; backoff > opts.MaxBackoff {
				backoff = opts.MaxBackoff
			}
			log.Warn("accept failed; backing off", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		if tc, ok := tcpConn(c); ok {
			_ = tc.SetNoDelay(true)
			if opts.KeepAlive > 0 {
				_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: opts.KeepAlive, Interval: opts.KeepAlive, Count: 3})
			}
		}
		if opts.Gate != nil {
			var ok bool
			if c, ok = opts.Gate(c); !ok {
				continue
			}
		}
		if opts.Conns != nil {
			opts.Conns.Add(1)
			go func() {
				defer opts.Conns.Done()
				handle(c)
			}()
			continue
		}
		go handle(c)
	}
}

// isTemporary reports whether an accept error is worth retrying: resource
// exhaustion, aborted handshakes and timeouts.
func isTemporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
