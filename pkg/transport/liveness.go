package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// Optional connection capabilities used by the session engine's lingering
// close and dead-peer detection (protocol.md section 3). The engine checks
// for them with a type assertion; a Conn without them still works.

// InputDiscarder is a Conn that can read and discard its raw input, for the
// lingering close after a framing error (when frames can no longer be read).
type InputDiscarder interface {
	// DiscardInput reads and throws away input until the peer closes, the
	// deadline passes, or the connection fails. A clean end is nil.
	DiscardInput(deadline time.Time) error
}

// KeepAliver is a Conn whose kernel can find a dead peer by itself (TCP
// keepalive probes and a TCP user timeout), for clients that never send a
// heartbeat.
type KeepAliver interface {
	// EnableKeepAlive makes the connection fail (reads return an error
	// wrapping syscall.ETIMEDOUT) once the peer has not acknowledged data or
	// probes for about timeout.
	EnableKeepAlive(timeout time.Duration) error
}

// Pinger is a Conn that can probe its peer in band (WebSocket ping); the
// peer's pong arrives through the read side and is reported to the control
// hook (see Conn.SetControlHook).
type Pinger interface {
	// Ping sends one probe, bounded by deadline.
	Ping(deadline time.Time) error
}

var (
	_ InputDiscarder = (*streamConn)(nil)
	_ KeepAliver     = (*streamConn)(nil)
	_ Pinger         = (*wsConn)(nil)
)

// DiscardInput implements InputDiscarder.
func (c *streamConn) DiscardInput(deadline time.Time) error {
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("discard input: %w", err)
	}
	buf := make([]byte, 4<<10)
	for {
		if _, err := c.Conn.Read(buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("discard input: %w", err)
		}
	}
}

// EnableKeepAlive implements KeepAliver: probes start after a third of
// timeout idle (at least 1s, the kernel's granularity), and the kernel gives
// up after timeout without an acknowledgement (TCP_USER_TIMEOUT).
func (c *streamConn) EnableKeepAlive(timeout time.Duration) error {
	var conn net.Conn = c.Conn
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	tcp, ok := tcpConn(conn)
	if !ok {
		return nil // not TCP (e.g. a pipe in tests): nothing to probe
	}
	probe := max(timeout/3, time.Second)
	if err := tcp.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 3}); err != nil {
		return fmt.Errorf("tcp keepalive: %w", err)
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return fmt.Errorf("tcp user timeout: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = setUserTimeout(fd, timeout) }); err != nil {
		return fmt.Errorf("tcp user timeout: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("tcp user timeout: %w", serr)
	}
	return nil
}

// Ping implements Pinger.
func (c *wsConn) Ping(deadline time.Time) error {
	if err := c.ws.WriteControl(websocket.PingMessage, nil, deadline); err != nil {
		return fmt.Errorf("websocket ping: %w", err)
	}
	return nil
}
