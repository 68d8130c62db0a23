package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// serverBinary is the playhouse-server binary, built once for the package's
// tests (see buildServerBinary).
var serverBinary struct {
	once sync.Once
	path string
	err  error
	dir  string
}

// TestMain removes the directory holding the built server binary.
func TestMain(m *testing.M) {
	code := m.Run()
	if serverBinary.dir != "" {
		_ = os.RemoveAll(serverBinary.dir)
	}
	os.Exit(code)
}

// buildServerBinary compiles ./cmd/playhouse-server once per test binary.
func buildServerBinary(t *testing.T) string {
	t.Helper()
	serverBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "playhouse-client-test-")
		if err != nil {
			serverBinary.err = err
			return
		}
		serverBinary.dir = dir
		bin := filepath.Join(dir, "playhouse-server")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/playhouse-k8s/playhouse/cmd/playhouse-server").CombinedOutput()
		if err != nil {
			serverBinary.err = fmt.Errorf("build playhouse-server: %w\n%s", err, out)
			return
		}
		serverBinary.path = bin
	})
	if serverBinary.err != nil {
		t.Fatal(serverBinary.err)
	}
	return serverBinary.path
}

// serverProcess is a running playhouse-server.
type serverProcess struct {
	cmd    *exec.Cmd
	tcp    string // client TCP address
	ws     string // client WebSocket address (path /ws)
	admin  string // admin HTTP address
	exited chan struct{}
	err    error // exit status, once exited is closed
	logs   *lockedBuffer
}

// lockedBuffer keeps a process's log for the failure message.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// resumePair starts two server processes signing with the key files given
// and one forwarder in front of their WebSocket (ws) or TCP listeners.
func resumePair(t *testing.T, ws bool, firstKey, secondKey string) (first, second *serverProcess, fwd *forwarder) {
	t.Helper()
	first = startServerProcess(t, "first", resumeServerConfig(firstKey))
	second = startServerProcess(t, "second", resumeServerConfig(secondKey))
	if ws {
		return first, second, newForwarder(t, first.ws, second.ws)
	}
	return first, second, newForwarder(t, first.tcp, second.tcp)
}

// startServerProcess runs the server binary with the given YAML (on free
// loopback ports, JSON logs) and learns its addresses from its log. The
// process is killed at the end of the test.
func startServerProcess(t *testing.T, name, yaml string) *serverProcess {
	t.Helper()
	bin := buildServerBinary(t)
	cfg := filepath.Join(t.TempDir(), name+".yaml")
	full := "transports:\n  tcp: {enabled: true, port: 0}\n  websocket: {enabled: true, port: 0}\nadmin: {port: 0}\nlog: {format: json, level: info}\n" + yaml
	if err := os.WriteFile(cfg, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, exited: make(chan struct{}), logs: &lockedBuffer{}}
	addrs := make(chan [3]string, 1)
	go func() {
		lines := bufio.NewScanner(stderr)
		lines.Buffer(make([]byte, 64<<10), 1<<20)
		var tcp, ws string
		sent := false
		for lines.Scan() {
			_, _ = p.logs.Write(append(lines.Bytes(), '\n'))
			var rec struct {
				Msg       string `json:"msg"`
				Transport string `json:"transport"`
				Addr      string `json:"addr"`
			}
			if sent || json.Unmarshal(lines.Bytes(), &rec) != nil {
				continue
			}
			switch {
			case rec.Msg == "listening" && rec.Transport == "tcp":
				tcp = rec.Addr
			case rec.Msg == "listening" && rec.Transport == "ws":
				ws = rec.Addr
			case rec.Msg == "admin listening":
				addrs <- [3]string{tcp, ws, rec.Addr}
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logs.String())
		}
	})
	select {
	case a := <-addrs:
		p.tcp, p.ws, p.admin = a[0], a[1], a[2]
	case <-p.exited:
		t.Fatalf("%s exited at start: %v\n%s", name, p.err, p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not log its addresses:\n%s", name, p.logs.String())
	}
	if p.tcp == "" || p.ws == "" {
		t.Fatalf("%s: no TCP or WebSocket address in its log", name)
	}
	return p
}

// status reads the server's /status document.
func (p *serverProcess) status(t *testing.T) (sessions int, draining bool) {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	defer resp.Body.Close()
	var st struct {
		Sessions int  `json:"sessions"`
		Draining bool `json:"draining"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("status: %v", err)
	}
	return st.Sessions, st.Draining
}

// forwarder is a tiny TCP proxy standing in for a Kubernetes Service: each new
// connection goes to the first backend that accepts it, in order, so it
// reaches the first server while that listens and the next once it stops.
// Half-closes are passed on, so the servers' lingering closes behave as
// they would without the proxy.
type forwarder struct {
	ln       net.Listener
	backends []string
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	routed   []atomic.Int64 // connections forwarded to each backend
}

func newForwarder(t *testing.T, backends ...string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}, routed: make([]atomic.Int64, len(backends))}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) track(c net.Conn) {
	f.mu.Lock()
	f.conns[c] = struct{}{}
	f.mu.Unlock()
}

func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *forwarder) accept() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.track(in)
		f.wg.Add(1)
		go f.serve(in)
	}
}

func (f *forwarder) serve(in net.Conn) {
	defer f.wg.Done()
	defer in.Close()
	var out net.Conn
	for i, b := range f.backends {
		c, err := net.Dial("tcp", b)
		if err == nil {
			out = c
			f.routed[i].Add(1)
			break
		}
	}
	if out == nil {
		return
	}
	f.track(out)
	defer out.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err == nil {
			_ = dst.(*net.TCPConn).CloseWrite() // pass the FIN on
		} else {
			// A reset or a local close: end both directions.
			in.Close()
			out.Close()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// resumeServerConfig is the YAML shared by the two servers of a resume test.
func resumeServerConfig(keyFile string) string {
	return fmt.Sprintf(`app: relay
drainTimeout: 3s
auth:
  signingKeyFile: %s
  reconnectTokenLifetime: 2m
limits:
  rateLimit: {packetsPerSecond: 0}
`, keyFile)
}

func writeKey(t *testing.T, key string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "signing-key")
	if err := os.WriteFile(f, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestResumeAcrossServerProcesses drains a real server process under load:
// 200 sessions, each with requests in flight, are behind one address (a
// forwarder); on SIGTERM the first server pushes @Drain@ and closes its
// sessions over the drain window; every client reconnects through the same
// address to the second server, authenticates with its reconnect token, and
// goes on. Every request is answered exactly once, every session ends up on
// the second server with its account and stage, and pushes flow again.
func TestResumeAcrossServerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	key := writeKey(t, "resume-test-signing-key-0123456789")
	first, second, fwd := resumePair(t, false, key, key)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	const sessions = 200
	clients := make([]*Client, sessions)
	stage := func(i int) int64 { return int64(1000 + i/2) } // two sessions per stage
	var setup sync.WaitGroup
	setupErr := make(chan error, sessions)
	for i := range clients {
		setup.Go(func() {
			c, err := Dial(ctx, fwd.addr(), Options{HeartbeatInterval: -1})
			if err != nil {
				setupErr <- err
				return
			}
			clients[i] = c
			if _, err := c.Authenticate(ctx, "AuthenticateRequest", []byte(fmt.Sprintf("player-%d", i))); err != nil {
				setupErr <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			r, err := c.Request(ctx, "JoinStageRequest", stage(i), nil)
			if err == nil {
				err = r.Err()
			}
			if err != nil {
				setupErr <- fmt.Errorf("session %d: join stage: %w", i, err)
			}
		})
	}
	setup.Wait()
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	})
	select {
	case err := <-setupErr:
		t.Fatal(err)
	default:
	}
	if n := fwd.routed[0].Load(); n != sessions {
		t.Fatalf("%d sessions reached the first server, want %d", n, sessions)
	}

	drainUnderLoad(t, ctx, first, clients, stage)
	var resent uint64
	for i, c := range clients {
		if d := c.DiscardedReplies(); d != 0 {
			t.Errorf("session %d: %d replies arrived for no waiting request (a request answered twice?)", i, d)
		}
		resent += c.ResentRequests()
	}
	t.Logf("requests resent on the new connections: %d", resent)

	select {
	case <-first.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("first server did not exit after its drain")
	}
	if first.err != nil {
		t.Fatalf("first server exit: %v", first.err)
	}
	if n, _ := second.status(t); n != sessions {
		t.Fatalf("second server has %d sessions, want %d", n, sessions)
	}
	if n := fwd.routed[1].Load(); n != sessions {
		t.Fatalf("%d connections reached the second server, want %d", n, sessions)
	}

	// Stage: the relay app pushes a one-way packet to the other session of
	// the sender's stage, which the token restored.
	for i := 0; i < sessions; i += 2 {
		msg := fmt.Sprintf("hello from %d", i)
		if err := clients[i].Send("ChatNotify", stage(i), []byte(msg)); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-clients[i+1].Pushes():
			if p.MsgID != "ChatNotify" || string(p.Payload) != msg {
				t.Fatalf("session %d: push %s %q, want ChatNotify %q", i+1, p.MsgID, p.Payload, msg)
			}
		case <-ctx.Done():
			t.Fatalf("session %d: relayed push not received (stage not restored?)", i+1)
		}
	}

	// Account: a new session authenticating as player-i supersedes the
	// resumed one, which the second server therefore holds for player-i.
	// The sessions are checked side by side: each superseded session ends
	// with a lingering close that takes about closeQuiet.
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			late, err := Dial(ctx, second.tcp, Options{HeartbeatInterval: -1, DisableResume: true})
			if err != nil {
				t.Errorf("session %d: dial: %v", i, err)
				return
			}
			defer late.Close()
			if _, err := late.Authenticate(ctx, "AuthenticateRequest", []byte(fmt.Sprintf("player-%d", i))); err != nil {
				t.Errorf("session %d: authenticate as player-%d: %v", i, i, err)
				return
			}
			select {
			case p := <-clients[i].Pushes():
				if p.MsgID != "@Kick@" || !bytes.Contains(p.Payload, []byte("Superseded")) {
					t.Errorf("session %d: push %s %s, want @Kick@ Superseded", i, p.MsgID, p.Payload)
					return
				}
			case <-ctx.Done():
				t.Errorf("session %d: not superseded by a new login as player-%d", i, i)
				return
			}
			select {
			case <-clients[i].Done():
			case <-ctx.Done():
				t.Errorf("session %d: not closed after @Kick@", i)
				return
			}
			if errors.Is(clients[i].Err(), ErrResumeFailed) {
				t.Errorf("session %d: a kick is not a drain, yet the client tried to resume: %v", i, clients[i].Err())
			}
		}()
	}
	wg.Wait()
}

// drainUnderLoad runs, on every client, a loop of requests (one always in
// flight) until it has resumed and had a few more requests answered (or a
// bounded count runs out); once every session has requests answered it
// sends SIGTERM to first. It checks that every request got exactly one
// answer, its own, and that every session resumed.
func drainUnderLoad(t *testing.T, ctx context.Context, first *serverProcess, clients []*Client, stage func(int) int64) {
	t.Helper()
	const (
		afterResume = 5
		maxRequests = 20000
	)
	type result struct {
		sent, answered int
		resumed        Event
		err            error
	}
	results := make([]result, len(clients))
	var warm atomic.Int64 // sessions with at least 3 answered requests
	var loops sync.WaitGroup
	for i, c := range clients {
		loops.Go(func() {
			res := &results[i]
			sinceResume := -1
			for res.sent < maxRequests && sinceResume < afterResume {
				select {
				case ev := <-c.Events():
					if ev.Kind != EventResumed {
						res.err = fmt.Errorf("event %v", ev)
						return
					}
					res.resumed = ev
					sinceResume = 0
				default:
				}
				payload := fmt.Sprintf("%d:%d", i, res.sent)
				res.sent++
				r, err := c.Request(ctx, "EchoRequest", stage(i), []byte(payload))
				if err != nil {
					res.err = fmt.Errorf("request %d: %w", res.sent, err)
					return
				}
				if r.ErrorCode != protocol.Success || string(r.Payload) != payload || r.MsgID != "EchoReply" {
					res.err = fmt.Errorf("request %q answered %s %v %q", payload, r.MsgID, r.ErrorCode, r.Payload)
					return
				}
				res.answered++
				if res.answered == 3 {
					warm.Add(1)
				}
				if sinceResume >= 0 {
					sinceResume++
				}
			}
		})
	}
	eventually(t, 30*time.Second, "every session to have requests answered", func() bool { return warm.Load() == int64(len(clients)) })
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	loops.Wait()
	for i, res := range results {
		if res.err != nil {
			t.Fatalf("session %d: %v (client error: %v)", i, res.err, clients[i].Err())
		}
		if res.resumed.Kind != EventResumed {
			t.Fatalf("session %d: no Resumed event after %d requests", i, res.sent)
		}
		if res.answered != res.sent {
			t.Fatalf("session %d: %d requests sent, %d answered", i, res.sent, res.answered)
		}
	}
}

// TestResumeOverWebSocketProcesses: the same over WebSocket (the forwarder
// carries the upgrade): the client redials the URL and resumes.
func TestResumeOverWebSocketProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	key := writeKey(t, "resume-test-signing-key-websocket")
	first, second, fwd := resumePair(t, true, key, key)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	const sessions = 20
	clients := make([]*Client, sessions)
	for i := range clients {
		c, err := DialWebSocket(ctx, "ws://"+fwd.addr()+"/ws", nil, Options{HeartbeatInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[i] = c
		if _, err := c.Authenticate(ctx, "AuthenticateRequest", []byte(fmt.Sprintf("ws-player-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	drainUnderLoad(t, ctx, first, clients, func(int) int64 { return 0 })
	for i, c := range clients {
		if d := c.DiscardedReplies(); d != 0 {
			t.Errorf("session %d: %d replies for no waiting request", i, d)
		}
	}
	if n, _ := second.status(t); n != sessions {
		t.Fatalf("second server has %d sessions, want %d", n, sessions)
	}
}

// TestResumeRefusedByServerProcess: the second server holds another signing
// key, so it refuses the reconnect tokens (ErrorCode 5). Each client stops at
// the first refusal with a clear error, as an event and as Err.
func TestResumeRefusedByServerProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	first, _, fwd := resumePair(t, false, writeKey(t, "resume-test-signing-key-number-one"), writeKey(t, "resume-test-signing-key-number-two"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	const sessions = 5
	clients := make([]*Client, sessions)
	for i := range clients {
		c, err := Dial(ctx, fwd.addr(), Options{HeartbeatInterval: -1, ResumeBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[i] = c
		if _, err := c.Authenticate(ctx, "AuthenticateRequest", []byte(fmt.Sprintf("player-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		var ev Event
		select {
		case ev = <-c.Events():
		case <-ctx.Done():
			t.Fatalf("session %d: no event", i)
		}
		if ev.Kind != EventResumeFailed || ev.Attempts != 1 {
			t.Fatalf("session %d: event %v", i, ev)
		}
		requireErrorIs(t, ev.Err, ErrResumeFailed)
		requireErrorIs(t, ev.Err, &ErrorCodeError{Code: protocol.AuthenticationFailed})
		<-c.Done()
		requireErrorIs(t, c.Err(), ErrResumeFailed)
	}
	if n := fwd.routed[1].Load(); n != sessions {
		t.Fatalf("%d connections reached the second server, want %d (one attempt each)", n, sessions)
	}
}
