package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// rawConn is the light client the connect, idle and broadcast modes use: no
// goroutine of its own, so the load generator can hold many thousands of
// sessions cheaply. One frame per WebSocket message, as protocol.md asks.
type rawConn struct {
	c       net.Conn // tcp and tls
	fr      *protocol.FrameReader
	ws      *websocket.Conn // ws and wss
	pending []byte          // frames left from the last WebSocket message
	out     []byte
	seq     uint16
}

// dialer spreads connections over several loopback source addresses
// (--source-ips: 127.0.0.2, 127.0.0.3, ...) so ephemeral ports do not run
// short, neither for the benchmark nor for other programs using 127.0.0.1.
type dialer struct {
	o      options
	tls    *tls.Config
	next   atomic.Uint32
	prefix net.IP // 127.0.0.0 when the target is IPv4 loopback and --source-ips > 1
}

func newDialer(o options, tlsCfg *tls.Config) *dialer {
	d := &dialer{o: o, tls: tlsCfg}
	if host, _, err := net.SplitHostPort(o.addr); err == nil && o.sourceIPs > 1 {
		if ip := net.ParseIP(host); ip != nil && ip.To4() != nil && ip.IsLoopback() {
			d.prefix = ip.To4()
		}
	}
	return d
}

func (d *dialer) netDialer() *net.Dialer {
	nd := &net.Dialer{Timeout: 30 * time.Second}
	if d.prefix != nil {
		i := d.next.Add(1) % uint32(d.o.sourceIPs)
		// 127.0.0.2 upwards: 127.0.0.1's ephemeral ports stay free for
		// whatever else runs on the machine.
		nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, byte(i/250), byte(2+i%250))}
	}
	return nd
}

// dial opens one connection (not yet authenticated).
func (d *dialer) dial(ctx context.Context) (*rawConn, error) {
	nd := d.netDialer()
	switch d.o.transport {
	case "ws", "wss":
		wd := websocket.Dialer{NetDialContext: nd.DialContext, TLSClientConfig: d.tls, HandshakeTimeout: 30 * time.Second}
		ws, resp, err := wd.DialContext(ctx, d.o.transport+"://"+d.o.addr+d.o.wsPath, nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", d.o.addr, err)
		}
		return &rawConn{ws: ws}, nil
	default:
		c, err := nd.DialContext(ctx, "tcp", d.o.addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", d.o.addr, err)
		}
		if d.o.transport == "tls" {
			cfg := d.tls
			if cfg.ServerName == "" {
				cfg = cfg.Clone()
				cfg.ServerName, _, _ = net.SplitHostPort(d.o.addr)
			}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			c = tc
		}
		return &rawConn{c: c, fr: protocol.NewFrameReader(c, protocol.DefaultMaxPacketSize)}, nil
	}
}

// dialAuthTimeout bounds one dial and authentication.
const dialAuthTimeout = 30 * time.Second

// dialAuth dials and authenticates (credentials name the account), within
// dialAuthTimeout.
func (d *dialer) dialAuth(ctx context.Context, credentials string) (*rawConn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialAuthTimeout)
	defer cancel()
	c, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.expectOK(ctx, d.o.authMsgID, 0, []byte(credentials)); err != nil {
		c.close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return c, nil
}

// send writes whole frames: one write on TCP, one message per frame on WebSocket.
func (c *rawConn) send(frames []byte) error {
	if c.c != nil {
		_, err := c.c.Write(frames)
		return err
	}
	for len(frames) > 0 {
		n := protocol.LengthSize + int(uint32(frames[0])|uint32(frames[1])<<8|uint32(frames[2])<<16|uint32(frames[3])<<24)
		if err := c.ws.WriteMessage(websocket.BinaryMessage, frames[:n]); err != nil {
			return err
		}
		frames = frames[n:]
	}
	return nil
}

// next reads the next frame and decodes it as a response or push.
func (c *rawConn) next() (protocol.Header, []byte, error) {
	var body []byte
	if c.c != nil {
		var err error
		if body, err = c.fr.Next(); err != nil {
			return protocol.Header{}, nil, err
		}
	} else {
		for len(c.pending) == 0 {
			_, msg, err := c.ws.ReadMessage()
			if err != nil {
				return protocol.Header{}, nil, err
			}
			c.pending = msg
		}
		if len(c.pending) < protocol.LengthSize {
			return protocol.Header{}, nil, errors.New("partial frame in a WebSocket message")
		}
		n, err := protocol.CheckLength(uint32(c.pending[0])|uint32(c.pending[1])<<8|uint32(c.pending[2])<<16|uint32(c.pending[3])<<24, protocol.DefaultMaxPacketSize)
		if err != nil || len(c.pending) < protocol.LengthSize+n {
			return protocol.Header{}, nil, fmt.Errorf("bad frame in a WebSocket message: %v", err)
		}
		body, c.pending = c.pending[protocol.LengthSize:protocol.LengthSize+n], c.pending[protocol.LengthSize+n:]
	}
	return protocol.ParseResponse(body)
}

// setDeadline bounds the next reads and writes by ctx's deadline (none without one).
func (c *rawConn) setDeadline(ctx context.Context) {
	t, _ := ctx.Deadline()
	if c.c != nil {
		_ = c.c.SetDeadline(t)
	} else {
		_ = c.ws.NetConn().SetDeadline(t)
	}
}

// expectOK sends one request and waits for its reply, which must carry
// ErrorCode 0. Pushes read meanwhile are skipped.
func (c *rawConn) expectOK(ctx context.Context, msgID string, stage int64, payload []byte) error {
	c.seq = c.seq%65535 + 1
	var err error
	if c.out, err = protocol.AppendRequest(c.out[:0], msgID, c.seq, stage, payload); err != nil {
		return err
	}
	c.setDeadline(ctx)
	defer c.setDeadline(context.Background())
	if err := c.send(c.out); err != nil {
		return err
	}
	for {
		h, _, err := c.next()
		if err != nil {
			return err
		}
		if h.MsgSeq != c.seq {
			continue
		}
		if h.ErrorCode != 0 {
			return fmt.Errorf("%s answered ErrorCode %d", msgID, h.ErrorCode)
		}
		return nil
	}
}

func (c *rawConn) close() {
	if c.c != nil {
		_ = c.c.Close()
	} else {
		_ = c.ws.Close()
	}
}
