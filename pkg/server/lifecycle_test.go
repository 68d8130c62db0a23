package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	. "github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// packet is one decoded server packet.
type packet struct {
	id      string
	seq     uint16
	code    protocol.ErrorCode
	payload string
}

// frameConn is a raw client over TCP or WebSocket: one frame per write,
// frames decoded on read; end reports how the server ended the connection.
type frameConn interface {
	send(b []byte) error
	recv() (packet, error)
	close()
}

type tcpFrameConn struct {
	c  net.Conn
	fr *protocol.FrameReader
}

func (t *tcpFrameConn) send(b []byte) error {
	_ = t.c.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := t.c.Write(b)
	return err
}

func (t *tcpFrameConn) recv() (packet, error) {
	_ = t.c.SetReadDeadline(time.Now().Add(testTimeout))
	body, err := t.fr.Next()
	if err != nil {
		return packet{}, err
	}
	return decode(body)
}

func (t *tcpFrameConn) close() { t.c.Close() }

type wsFrameConn struct {
	ws *websocket.Conn
	mu sync.Mutex
}

func (w *wsFrameConn) send(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.ws.SetWriteDeadline(time.Now().Add(testTimeout))
	return w.ws.WriteMessage(websocket.BinaryMessage, b)
}

func (w *wsFrameConn) recv() (packet, error) {
	_ = w.ws.SetReadDeadline(time.Now().Add(testTimeout))
	_, msg, err := w.ws.ReadMessage()
	if err != nil {
		return packet{}, err
	}
	if len(msg) < protocol.LengthSize {
		return packet{}, fmt.Errorf("short message %x", msg)
	}
	return decode(msg[protocol.LengthSize:])
}

func (w *wsFrameConn) close() { w.ws.Close() }

func decode(body []byte) (packet, error) {
	h, p, err := protocol.ParseResponse(body)
	if err != nil {
		return packet{}, err
	}
	return packet{id: string(h.MsgID), seq: h.MsgSeq, code: h.ErrorCode, payload: string(p)}, nil
}

// dialFrames connects to srv over kind (tcp or ws) and authenticates as account.
func dialFrames(t *testing.T, srv *Server, kind transport.Kind, account string) frameConn {
	t.Helper()
	fc := rawDial(t, srv, kind)
	b, _ := protocol.AppendRequest(nil, "AuthenticateRequest", 1, 0, []byte(account))
	if err := fc.send(b); err != nil {
		t.Fatal(err)
	}
	if p, err := fc.recv(); err != nil || p.code != 0 || p.seq != 1 {
		t.Fatalf("auth: %+v %v", p, err)
	}
	return fc
}

// edgeConfig is testConfig without the packet rate limit (the clients below
// send as fast as they can) and with a short drain.
func edgeConfig(t *testing.T) config.Config {
	t.Helper()
	c, _ := testConfig(t)
	c.Limits.RateLimit.PacketsPerSecond = 0
	c.DrainTimeout = config.D(3 * time.Second)
	return c
}

// checkClose checks how the server ended the connection: a clean end of
// stream on TCP (FIN, not a reset), a Close frame with code and the reason
// name on WebSocket (not 1006).
func checkClose(t *testing.T, kind transport.Kind, err error, code int, reason session.CloseReason) {
	t.Helper()
	if kind == transport.KindWebSocket {
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code || ce.Text != reason.String() {
			t.Fatalf("websocket end = %v, want close %d %q", err, code, reason)
		}
		return
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("tcp end = %v, want a clean EOF", err)
	}
}

// Finding 2 of issue 6: a client that keeps sending one-way packets while it
// is drained still receives everything queued for it, then @Drain@, then a
// proper close.
// The same holds for @Kick@ (and Superseded, AuthFailed, RateLimited:
// every close goes the same way): here the close point comes right after
// the pushes, while they are still queued.
func TestDrainDeliversQueueToClientStillSending(t *testing.T) {
	for _, kind := range []transport.Kind{transport.KindTCP, transport.KindWebSocket} {
		for _, how := range []string{"drain", "kick"} {
			t.Run(string(kind)+"/"+how, func(t *testing.T) { deliversQueue(t, kind, how) })
		}
	}
}

func deliversQueue(t *testing.T, kind transport.Kind, how string) {
	{
		{
			c := edgeConfig(t)
			c.App = "relay" // one-way packets outside a stage get no answer
			srv := startServer(t, c)
			fc := dialFrames(t, srv, kind, "sender")
			s, ok := srv.Manager().ByAccount("sender")
			if !ok {
				t.Fatal("no session")
			}
			// The client sends one-way packets until the end.
			stop := make(chan struct{})
			var sendWG sync.WaitGroup
			sendWG.Add(1)
			go func() {
				defer sendWG.Done()
				b, _ := protocol.AppendRequest(nil, "Ignored", 0, 0, make([]byte, 64))
				for {
					select {
					case <-stop:
						return
					default:
					}
					if fc.send(b) != nil {
						return
					}
					time.Sleep(100 * time.Microsecond) // busy, within the byte rate
				}
			}()
			defer func() { close(stop); sendWG.Wait() }()
			const queued = 20
			big := make([]byte, 32<<10)
			for i := range queued {
				if err := s.Push("News", 0, append([]byte(fmt.Sprint(i, ":")), big...)); err != nil {
					t.Fatal(err)
				}
			}
			notice, code, reason := session.DrainMsgID, 1001, session.ServerShutdown
			if how == "kick" {
				notice, code, reason = session.KickMsgID, 1008, session.Kicked
				s.Kick("bye")
			} else {
				go func() { _ = srv.Manager().Drain(context.Background(), 3*time.Second) }()
			}
			news, drained := 0, false
			var end error
			for {
				p, err := fc.recv()
				if err != nil {
					end = err
					break
				}
				time.Sleep(time.Millisecond) // a client that reads at a game's pace, not instantly
				switch p.id {
				case "News":
					if drained || p.payload[:len(fmt.Sprint(news, ":"))] != fmt.Sprint(news, ":") {
						t.Fatalf("push %d out of order (drained %v)", news, drained)
					}
					news++
				case notice:
					drained = true
				default:
					t.Fatalf("unexpected packet %+v", p)
				}
			}
			if news != queued || !drained {
				t.Fatalf("received %d of %d pushes, %s %v; ended with %v", news, queued, notice, drained, end)
			}
			checkClose(t, kind, end, code, reason)
		}
	}
}

// Finding 3 of issue 6: clients that keep sending requests until the drain
// closes them get exactly one answer for every request (a reply, or
// ServerDraining once past their close point; they stop sending on the first
// ServerDraining, as the Go client does).
func TestDrainAnswersEveryRequestExactlyOnce(t *testing.T) {
	for _, kind := range []transport.Kind{transport.KindTCP, transport.KindWebSocket} {
		t.Run(string(kind), func(t *testing.T) {
			srv := startServer(t, edgeConfig(t))
			const clients = 8
			type result struct {
				sent     int
				answers  map[uint16]int
				draining int
				end      error
			}
			results := make([]result, clients)
			var wg sync.WaitGroup
			started := make(chan struct{}, clients)
			for i := range clients {
				fc := dialFrames(t, srv, kind, fmt.Sprintf("req-%d", i))
				wg.Add(1)
				go func() {
					defer wg.Done()
					var stop atomic.Bool
					var sent atomic.Int64
					sendDone := make(chan struct{})
					go func() {
						defer close(sendDone)
						for seq := uint16(2); !stop.Load() && seq < 60000; seq++ {
							b, _ := protocol.AppendRequest(nil, "EchoRequest", seq, 0, []byte("x"))
							if fc.send(b) != nil {
								return
							}
							sent.Store(int64(seq - 1))
							if seq == 50 {
								started <- struct{}{}
							}
							time.Sleep(200 * time.Microsecond) // a busy client, not a flood
						}
					}()
					r := result{answers: map[uint16]int{}}
					for {
						p, err := fc.recv()
						if err != nil {
							r.end = err
							break
						}
						if p.seq == 0 {
							continue // @Drain@
						}
						r.answers[p.seq]++
						if p.code == protocol.ServerDraining {
							r.draining++
							stop.Store(true)
						}
					}
					stop.Store(true)
					<-sendDone
					r.sent = int(sent.Load())
					results[i] = r
				}()
			}
			for range clients {
				<-started
			}
			go func() { _ = srv.Manager().Drain(context.Background(), 3*time.Second) }()
			wg.Wait()
			for i, r := range results {
				for seq := uint16(2); int(seq) <= r.sent+1; seq++ {
					if n := r.answers[seq]; n != 1 {
						t.Errorf("client %d: request %d of %d answered %d times (ended with %v)", i, seq, r.sent, n, r.end)
						break
					}
				}
				if r.draining == 0 {
					t.Errorf("client %d: no ServerDraining answer (sent %d, ended with %v)", i, r.sent, r.end)
				}
				checkClose(t, kind, r.end, 1001, session.ServerShutdown)
			}
		})
	}
}

// A kicked WebSocket client sees @Kick@ and then a Close frame 1008 "Kicked".
func TestWebSocketCloseCodeAndReason(t *testing.T) {
	srv := startServer(t, edgeConfig(t))
	fc := dialFrames(t, srv, transport.KindWebSocket, "kicked")
	s, _ := srv.Manager().ByAccount("kicked")
	s.Kick("bye")
	p, err := fc.recv()
	if err != nil || p.id != session.KickMsgID {
		t.Fatalf("kick push = %+v, %v", p, err)
	}
	_, err = fc.recv()
	checkClose(t, transport.KindWebSocket, err, 1008, session.Kicked)
}

// Finding 7 of issue 6: WebSocket pings are charged to the session's rate
// limit; a ping flood is closed RateLimited.
func TestWebSocketPingFloodClosed(t *testing.T) {
	c, _ := testConfig(t)
	c.Limits.RateLimit = config.RateLimit{PacketsPerSecond: 100, Burst: 200, MaxViolations: 100}
	srv := startServer(t, c)
	fc := dialFrames(t, srv, transport.KindWebSocket, "pinger").(*wsFrameConn)
	s, _ := srv.Manager().ByAccount("pinger")
	readDone := make(chan error, 1)
	go func() {
		for {
			if _, err := fc.recv(); err != nil {
				readDone <- err
				return
			}
		}
	}()
	sent := 0
	for ; sent < 100000; sent++ {
		if err := fc.ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(testTimeout)); err != nil {
			break
		}
		if s.CloseReason() != session.ReasonNone {
			break
		}
	}
	err := <-readDone
	if got := s.CloseReason(); got != session.RateLimited {
		t.Fatalf("after %d pings the session reason is %s (read ended with %v)", sent, got, err)
	}
	checkClose(t, transport.KindWebSocket, err, 1008, session.RateLimited)
	if sent >= 100000 {
		t.Fatal("the flood was never stopped")
	}
}

// Regression (issue 7): playhouse_slow_consumers_total counts slow consumers
// only, not sessions closed for other reasons.
func TestSlowConsumerMetricCountsOnlySlowConsumers(t *testing.T) {
	c, _ := testConfig(t)
	c.Limits.MaxPacketSize = 32 << 10
	c.Limits.MaxPendingOutboundBytes = 64 << 10
	c.Limits.WriteTimeout = config.D(500 * time.Millisecond)
	srv := startServer(t, c)
	slow := dialFrames(t, srv, transport.KindTCP, "slow")
	_ = slow.(*tcpFrameConn).c.(*net.TCPConn).SetReadBuffer(4 << 10)
	kicked := dialFrames(t, srv, transport.KindTCP, "kicked")
	s, _ := srv.Manager().ByAccount("slow")
	k, _ := srv.Manager().ByAccount("kicked")
	k.Kick("bye")
	for i := 0; i < 1000 && s.CloseReason() == session.ReasonNone; i++ {
		_ = s.Push("Flood", 0, make([]byte, 16<<10)) // the client never reads
	}
	for _, fc := range []frameConn{kicked} {
		for {
			if _, err := fc.recv(); err != nil {
				break
			}
		}
		fc.close()
	}
	waitFor(t, "both sessions to end", func() bool { return srv.Manager().Count() == 0 })
	fams := scrape(t, srv)
	if v := value(fams, "playhouse_slow_consumers_total", nil); v != 1 {
		t.Fatalf("playhouse_slow_consumers_total = %v, want 1", v)
	}
}

// Issue 7 point 7 over WebSocket: a client that never heartbeats but reads
// (so its WebSocket answers the server's pings) stays past heartbeatTimeout,
// while a TCP client that heartbeated and went quiet is closed IdleTimeout.
func TestSilentWebSocketClientStays(t *testing.T) {
	c, _ := testConfig(t)
	c.Limits.HeartbeatTimeout = config.D(300 * time.Millisecond)
	srv := startServer(t, c)
	silent := dialFrames(t, srv, transport.KindWebSocket, "silent-ws").(*wsFrameConn)
	silentS, _ := srv.Manager().ByAccount("silent-ws")
	got := make(chan packet, 1)
	go func() { // a browser reads all the time; gorilla answers pings while reading
		for {
			p, err := silent.recv()
			if err != nil {
				return
			}
			got <- p
		}
	}()
	beating := dialFrames(t, srv, transport.KindTCP, "beating")
	beatingS, _ := srv.Manager().ByAccount("beating")
	hb, _ := protocol.AppendRequest(nil, "@Heart@Beat@", 0, 0, nil)
	if err := beating.send(hb); err != nil {
		t.Fatal(err)
	}
	if _, err := beating.recv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the heartbeating client to time out", func() bool { return beatingS.CloseReason() == session.IdleTimeout })
	if r := silentS.CloseReason(); r != session.ReasonNone {
		t.Fatalf("silent WebSocket client closed %s", r)
	}
	b, _ := protocol.AppendRequest(nil, "EchoRequest", 2, 0, []byte("alive"))
	if err := silent.send(b); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p.payload != "alive" {
			t.Fatalf("echo = %+v", p)
		}
	case <-time.After(testTimeout):
		t.Fatal("no echo")
	}
}

// The ErrorCode 5 answer before an AuthFailed close reaches the client, then
// a proper close (Close frame 1008 "AuthFailed" on WebSocket), and a frame
// over limits.preAuthMaxPacketSize before authentication closes 1009
// "FrameTooLarge".
func TestAuthFailedAndPreAuthLimitCloses(t *testing.T) {
	c, _ := testConfig(t)
	c.Limits.MaxAuthAttempts = 1
	c.Limits.PreAuthMaxPacketSize = 1024
	srv := startServer(t, c)
	for _, kind := range []transport.Kind{transport.KindTCP, transport.KindWebSocket} {
		t.Run(string(kind), func(t *testing.T) {
			dialFrames(t, srv, kind, "neighbour-"+string(kind)) // an authenticated neighbour, unaffected
			bad := rawDial(t, srv, kind)
			b, _ := protocol.AppendRequest(nil, "AuthenticateRequest", 1, 0, nil) // the echo app refuses empty credentials
			if err := bad.send(b); err != nil {
				t.Fatal(err)
			}
			if p, err := bad.recv(); err != nil || p.code != protocol.AuthenticationFailed || p.seq != 1 {
				t.Fatalf("failed auth answer = %+v %v", p, err)
			}
			_, err := bad.recv()
			checkClose(t, kind, err, 1008, session.AuthFailed)

			big := rawDial(t, srv, kind)
			b, _ = protocol.AppendRequest(nil, "AuthenticateRequest", 1, 0, make([]byte, 2000))
			if err := big.send(b); err != nil {
				t.Fatal(err)
			}
			_, err = big.recv()
			if kind == transport.KindWebSocket {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != 1009 {
					t.Fatalf("websocket end = %v, want close 1009", err)
				}
			} else if err == nil {
				t.Fatal("frame over the pre-auth limit answered")
			}
		})
	}
	waitFor(t, "FrameTooLarge closes", func() bool { return srv.Manager().Stats().Closed[session.FrameTooLarge] == 2 })
}

// rawDial connects over kind (tcp or ws) without authenticating.
func rawDial(t *testing.T, srv *Server, kind transport.Kind) frameConn {
	t.Helper()
	var fc frameConn
	switch kind {
	case transport.KindTCP:
		c, err := net.Dial("tcp", srv.Addr(kind).String())
		if err != nil {
			t.Fatal(err)
		}
		fc = &tcpFrameConn{c: c, fr: protocol.NewFrameReader(c, 4<<20)}
	case transport.KindWebSocket:
		ws, _, err := websocket.DefaultDialer.Dial(wsURL("ws", srv.Addr(kind)), nil)
		if err != nil {
			t.Fatal(err)
		}
		fc = &wsFrameConn{ws: ws}
	default:
		t.Fatalf("transport %s", kind)
	}
	t.Cleanup(fc.close)
	return fc
}
