// Package memory holds the regression test of the engine's memory per idle
// session (issue 9). It measures with runtime figures after a forced GC, in
// one process, with no timing, so it can run in every `make test`.
package memory

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/apps/echo"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// idleSessions is how many sessions the test holds: enough that fixed costs
// (listener, admin server, runtime) vanish in the per-session figure, few
// enough for a busy 2-core machine (two descriptors each, client and server,
// well under the 20,000 open files a process may hold).
const idleSessions = 2000

// maxIdleTCPBytes bounds the server's Go heap in use plus goroutine stacks
// per idle authenticated TCP session, after a forced GC.
//
// Measured on 2026-11-29, 2,000 sessions, about 0.4 KiB of it this test's
// own client socket (it lives in the same process): before the issue 9
// engine work 18.0-18.6 KiB (two goroutines per session, the reader's stack
// pinned at 8 KiB, the frame reader's 4 KiB buffer, a name map per session);
// after it 7.2 KiB, 11.1 KiB under -race (the race detector's shadow memory
// and larger stacks: raceOverhead); since the reader goes on on a fresh
// goroutine after the login (issue 9, fifth pass), 5.7 KiB, 6.3-7.0 KiB
// under -race. The bound is the issue 9 target, 8 KiB: a margin for a busy
// machine, and it still fails on 8 KiB more held per session under -race
// (TestIdleMeasurementSeesRegression checks that; at 10 KiB it no longer
// did once the sessions had become smaller).
const maxIdleTCPBytes = 8<<10 + raceOverhead

// maxAfterBurstTCPBytes is the same bound for a session that has passed 20
// pipelined echo requests of 1 KiB (every reply read back) before the
// measurement: the target is the idle figure after a burst too. Measured on
// 2026-11-29: 39.5 KiB before the engine work (the grown buffers stayed),
// 8.0 KiB after it (12.0 KiB under -race).
const maxAfterBurstTCPBytes = 10<<10 + raceOverhead

// dialers is how many goroutines open the test's sessions side by side.
const dialers = 8

// openAll opens n sessions with open, dialers at a time (each dialer has its
// own 256-byte scratch buffer), and returns them with the first error.
func openAll(n int, open func(i int, buf []byte) (net.Conn, error)) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for d := range dialers {
		wg.Go(func() {
			buf := make([]byte, 256)
			for i := d; i < n; i += dialers {
				c, err := open(i, buf)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("session %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	return conns, firstErr
}

// heapAndStacks returns the Go heap in use plus goroutine stacks after a
// forced GC.
func heapAndStacks() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// authenticate dials addr and authenticates; the returned connection holds
// no goroutine and no buffer of its own.
func authenticate(addr, account string, buf []byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	frame, err := protocol.AppendRequest(buf[:0], "AuthenticateRequest", 1, 0, []byte(account))
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(frame); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, buf[:protocol.LengthSize]); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("read: %w", err)
	}
	n := int(binary.LittleEndian.Uint32(buf))
	if n > len(buf) {
		_ = c.Close()
		return nil, fmt.Errorf("reply of %d bytes", n)
	}
	if _, err := io.ReadFull(c, buf[:n]); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("read: %w", err)
	}
	h, _, err := protocol.ParseResponse(buf[:n])
	if err != nil || h.MsgSeq != 1 || h.ErrorCode != protocol.Success {
		_ = c.Close()
		return nil, fmt.Errorf("authenticate reply %s seq %d code %d: %v", h.MsgID, h.MsgSeq, h.ErrorCode, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// burstPayload is the payload of each request of a burst.
const burstPayload = 1 << 10

// echoBurst writes frames (n requests) and reads n replies.
func echoBurst(c net.Conn, frames []byte, n int, buf []byte) error {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write(frames); err != nil {
		return err
	}
	for range n {
		if _, err := io.ReadFull(c, buf[:protocol.LengthSize]); err != nil {
			return err
		}
		l := int(binary.LittleEndian.Uint32(buf))
		if l > len(buf) {
			return fmt.Errorf("reply of %d bytes", l)
		}
		if _, err := io.ReadFull(c, buf[:l]); err != nil {
			return err
		}
		if h, _, err := protocol.ParseResponse(buf[:l]); err != nil || h.ErrorCode != protocol.Success {
			return fmt.Errorf("reply %s code %d: %v", h.MsgID, h.ErrorCode, err)
		}
	}
	return nil
}

// TestAfterBurstTCPSessionMemory fails when a TCP session that has passed a
// burst of traffic keeps clearly more memory than it does today.
func TestAfterBurstTCPSessionMemory(t *testing.T) {
	per := idleBytesPerSession(t, nil, 20)
	if per > maxAfterBurstTCPBytes {
		t.Fatalf("a TCP session after a burst of 20 echoes of 1 KiB holds %.2f KiB of heap and stacks, above the %d KiB bound (issue 9 target: 8 KiB)",
			per/1024, maxAfterBurstTCPBytes>>10)
	}
}

// TestIdleTCPSessionMemory fails when an idle authenticated TCP session
// costs the server clearly more heap and stack than it does today.
func TestIdleTCPSessionMemory(t *testing.T) {
	per := idleBytesPerSession(t, nil, 0)
	if per > maxIdleTCPBytes {
		t.Fatalf("an idle authenticated TCP session costs %.2f KiB of heap and stacks, above the %d KiB bound (issue 9 target: 8 KiB)",
			per/1024, maxIdleTCPBytes>>10)
	}
	// The measurement must see the sessions at all: a broken measurement
	// (nothing held) must not pass as "small".
	if per < 1024 {
		t.Fatalf("%.2f KiB per session: the sessions are not being measured", per/1024)
	}
}

// retainer is the echo app holding 8 KiB per authenticated session: a
// stand-in for a regression of the engine.
type retainer struct{ echo.Handler }

func (r retainer) Authenticate(s *session.Session, p *session.Packet) session.AuthResult {
	s.SetData(make([]byte, 8<<10))
	return r.Handler.Authenticate(s, p)
}

// TestIdleMeasurementSeesRegression checks that the measurement above would
// catch a regression: 8 KiB more held per session shows as about 8 KiB more
// per session, and crosses the bound.
func TestIdleMeasurementSeesRegression(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: one memory measurement (TestIdleTCPSessionMemory) is enough")
	}
	base := idleBytesPerSession(t, nil, 0)
	worse := idleBytesPerSession(t, retainer{}, 0)
	if d := worse - base; d < 6<<10 || d > 11<<10 {
		t.Fatalf("8 KiB more per session measured as %.2f KiB more (%.2f -> %.2f KiB)", d/1024, base/1024, worse/1024)
	}
	if worse <= maxIdleTCPBytes {
		t.Fatalf("a regression of 8 KiB per session (%.2f KiB) stays under the %d KiB bound", worse/1024, maxIdleTCPBytes>>10)
	}
}

// idleBytesPerSession runs a server with handler (nil: the echo app), opens
// idleSessions authenticated TCP sessions, passes burst echo requests of
// burstPayload bytes through each (pipelined, every reply read back), and
// returns the growth of heap in use plus stacks per session, after a forced
// GC.
func idleBytesPerSession(t *testing.T, handler session.Handler, burst int) float64 {
	t.Helper()
	c := config.Default()
	c.Transports.TCP.Port, c.Admin.Port = 0, 0
	c.Transports.WebSocket.Enabled = false
	c.Limits.MaxConnections = idleSessions + 100
	c.Limits.HeartbeatTimeout = config.D(time.Hour) // idle for as long as the test takes
	c.Limits.IdlePark = config.D(0)                 // every session keeps its reader: the figure must not depend on timing
	if handler == nil {
		handler = echo.New()
	}
	srv, err := serverconfig.New(c, handler, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()
	addr := srv.Addr(transport.KindTCP).String()

	// Warm up the accept path, then measure with no session open.
	warm, err := authenticate(addr, "warm-up", make([]byte, 256))
	if err != nil {
		t.Fatal(err)
	}
	_ = warm.Close()
	testutil.WaitFor(t, "the warm-up session closed", func() bool { return srv.Manager().Count() == 0 })
	before := heapAndStacks()

	conns, firstErr := openAll(idleSessions, func(i int, buf []byte) (net.Conn, error) {
		return authenticate(addr, fmt.Sprintf("idle-%d", i), buf)
	})
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if burst > 0 {
		for d := range dialers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var frames []byte
				buf := make([]byte, 2*burstPayload)
				payload := make([]byte, burstPayload)
				for i := d; i < idleSessions; i += dialers {
					frames = frames[:0]
					for k := range burst {
						frames, _ = protocol.AppendRequest(frames, "EchoRequest", uint16(2+k), 0, payload)
					}
					if err := echoBurst(conns[i], frames, burst, buf); err != nil {
						mu.Lock()
						firstErr = fmt.Errorf("session %d: burst: %w", i, err)
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			t.Fatal(firstErr)
		}
	}
	testutil.WaitFor(t, "every session counted", func() bool { return srv.Manager().Count() == idleSessions })

	after := heapAndStacks()
	per := (float64(after) - float64(before)) / idleSessions
	t.Logf("heap+stacks per authenticated TCP session, idle after a burst of %d requests: %.2f KiB (%d sessions, %.1f -> %.1f MiB)",
		burst, per/1024, idleSessions, float64(before)/(1<<20), float64(after)/(1<<20))
	runtime.KeepAlive(conns)
	return per
}
