package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// DialWebSocket connects to a ws:// or wss:// URL (for example
// "ws://127.0.0.1:7778/ws") and returns a running Client. Like the official
// connectors it sends each frame as one binary message and reads received
// messages as a byte stream. opts.TLSConfig is used for wss://; header is sent
// with the upgrade request (for example an Origin) and may be nil. Unless
// opts.Reconnect is set, a resume after a drain dials url again the same way.
func DialWebSocket(ctx context.Context, url string, header http.Header, opts Options) (*Client, error) {
	if _, ok := ctx.Deadline(); !ok {
		if t := opts.withDefaults().RequestTimeout; t > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t)
			defer cancel()
		}
	}
	stream, err := dialWebSocket(ctx, url, header, opts)
	if err != nil {
		return nil, err
	}
	if opts.Reconnect == nil {
		o, h := opts, header.Clone()
		opts.Reconnect = func(ctx context.Context) (io.ReadWriteCloser, error) { return dialWebSocket(ctx, url, h, o) }
	}
	return New(stream, opts), nil
}

func dialWebSocket(ctx context.Context, url string, header http.Header, opts Options) (*wsStream, error) {
	d := websocket.Dialer{TLSClientConfig: opts.TLSConfig, Proxy: nil}
	if opts.Dialer != nil {
		d.NetDialContext = opts.Dialer.DialContext
	}
	ws, resp, err := d.DialContext(ctx, url, header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("playhouse client: websocket dial %s: %w (HTTP %s)", url, err, resp.Status)
		}
		return nil, fmt.Errorf("playhouse client: websocket dial %s: %w", url, err)
	}
	return &wsStream{ws: ws}, nil
}

// wsStream adapts a WebSocket to the byte stream a Client reads and writes:
// every Write is one binary message (the Client writes one frame per call),
// and Read concatenates received messages.
type wsStream struct {
	ws  *websocket.Conn
	cur io.Reader
}

func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if s.cur == nil {
			typ, r, err := s.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, fmt.Errorf("playhouse client: unexpected websocket message type %d", typ)
			}
			s.cur = r
		}
		n, err := s.cur.Read(p)
		if err == io.EOF {
			s.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (s *wsStream) Write(p []byte) (int, error) {
	if err := s.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *wsStream) Close() error                       { return s.ws.Close() }
func (s *wsStream) SetWriteDeadline(t time.Time) error { return s.ws.SetWriteDeadline(t) }
func (s *wsStream) LocalAddr() net.Addr                { return s.ws.LocalAddr() }
func (s *wsStream) RemoteAddr() net.Addr               { return s.ws.RemoteAddr() }
