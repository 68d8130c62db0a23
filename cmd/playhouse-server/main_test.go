package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

const testTimeout = 20 * time.Second

func TestFlagsOverrideConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("transports:\n  tcp: {enabled: true, port: 9000}\n  websocket: {enabled: false}\nlog: {format: json}\nlimits: {maxPacketSize: 4096}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, err := parseFlags([]string{"--config", file, "--tcp-addr", "127.0.0.1:7001", "--log-format", "text"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ListenAddr(c.Transports.TCP); got != "127.0.0.1:7001" {
		t.Errorf("tcp addr = %q", got)
	}
	if c.Log.Format != "text" || c.Limits.MaxPacketSize != 4096 || c.Transports.WebSocket.Enabled {
		t.Errorf("config = %+v", c)
	}
	// No flags: the embedded defaults.
	f, _, _ = parseFlags(nil, io.Discard)
	if c, err = loadConfig(f); err != nil || c.ListenAddr(c.Transports.TCP) != "127.0.0.1:7777" || c.AdminAddr() != "127.0.0.1:9090" || c.App != "echo" {
		t.Errorf("defaults: %v %+v", err, c)
	}
}

func TestBadInputIsAClearError(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("limits: {maxPacketSize: -1}\n"), 0o600)
	mountedOnly := filepath.Join(dir, "mounted.yaml")
	_ = os.WriteFile(mountedOnly, []byte("transports: {tcp: {enabled: false}, websocket: {enabled: false}, mounted: true}\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "read config"},
		{[]string{"--config", bad}, "limits.maxPacketSize"},
		{[]string{"--wss-addr", "127.0.0.1:0"}, "certFile and keyFile are required"},
		{[]string{"--app", "chess"}, "app: must be"},
		{[]string{"--config", mountedOnly}, "playhouse-server mounts no handler"},
		{[]string{"--no-such-flag"}, "not defined"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stderr)
		if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
			t.Errorf("run(%v) = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// process is a running playhouse-server binary.
type process struct {
	cmd   *exec.Cmd
	addrs map[string]string // transport (and "admin") to bound address
}

// buildServer compiles the binary once per test.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "playhouse-server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// startServer runs bin with a config on free loopback ports and learns the
// bound addresses from its structured log.
func startServer(t *testing.T, bin, extraConfig string) *process {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	_ = os.WriteFile(cfg, []byte("transports:\n  tcp: {port: 0}\n  websocket: {port: 0}\nadmin: {port: 0}\n"+extraConfig), 0o600)
	cmd := exec.Command(bin, "--config", cfg, "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	p := &process{cmd: cmd, addrs: map[string]string{}}
	lines := bufio.NewScanner(stderr)
	found := make(chan struct{})
	go func() {
		defer close(found)
		for lines.Scan() {
			var rec struct {
				Msg       string `json:"msg"`
				Transport string `json:"transport"`
				Addr      string `json:"addr"`
			}
			if json.Unmarshal(lines.Bytes(), &rec) != nil {
				continue
			}
			switch rec.Msg {
			case "listening":
				p.addrs[rec.Transport] = rec.Addr
			case "admin listening":
				p.addrs["admin"] = rec.Addr
				go io.Copy(io.Discard, stderr)
				return
			}
		}
	}()
	select {
	case <-found:
	case <-time.After(testTimeout):
		t.Fatal("server did not log its addresses")
	}
	if p.addrs["tcp"] == "" || p.addrs["ws"] == "" || p.addrs["admin"] == "" {
		t.Fatalf("addresses: %v", p.addrs)
	}
	return p
}

// session authenticates over TCP and checks one echo; it returns the frame reader.
func (p *process) session(t *testing.T, account string) (net.Conn, *protocol.FrameReader) {
	t.Helper()
	c, err := net.Dial("tcp", p.addrs["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	fr := protocol.NewFrameReader(c, 1<<20)
	for i, id := range []string{"AuthenticateRequest", "EchoRequest"} {
		b, _ := protocol.AppendRequest(nil, id, uint16(i+1), 0, []byte(account))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		body, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if h, pl, err := protocol.ParseResponse(body); err != nil || h.ErrorCode != 0 || string(pl) != account {
			t.Fatalf("%s reply: %+v %q %v", id, h, pl, err)
		}
	}
	return c, fr
}

// expectDrainNotice reads the @Drain@ push and checks it carries a token.
func expectDrainNotice(t *testing.T, fr *protocol.FrameReader) {
	t.Helper()
	body, err := fr.Next()
	if err != nil {
		t.Fatalf("no drain notice: %v", err)
	}
	h, pl, err := protocol.ParseResponse(body)
	var notice struct {
		ReconnectToken string `json:"reconnectToken"`
		RetryAfterMs   int64  `json:"retryAfterMs"`
	}
	if err != nil || string(h.MsgID) != "@Drain@" || h.MsgSeq != 0 || json.Unmarshal(pl, &notice) != nil || notice.ReconnectToken == "" {
		t.Fatalf("drain notice: %+v %s %v", h, pl, err)
	}
}

// waitExit waits for the process to exit 0 within limit.
func (p *process) waitExit(t *testing.T, limit time.Duration) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(limit):
		t.Fatalf("process did not exit within %s", limit)
	}
}

// TestProcessDrainsOnSIGTERM builds the real binary, runs it, talks to it
// over TCP and drains it with SIGTERM: readiness drops, the client gets
// @Drain@ with a reconnect token, is closed within the drain timeout, and the
// process exits 0.
func TestProcessDrainsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServer(t)
	p := startServer(t, bin, "drainTimeout: 1s\n")
	resp, err := http.Get("http://" + p.addrs["admin"] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz = %d", resp.StatusCode)
	}
	_, fr := p.session(t, "player-1")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectDrainNotice(t, fr)
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("client after the drain: %v", err)
	}
	p.waitExit(t, testTimeout)
}

// TestProcessSecondSIGTERMEndsDrain: with a long drain timeout, a second
// SIGTERM closes the remaining sessions at once and the process exits 0.
func TestProcessSecondSIGTERMEndsDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServer(t)
	p := startServer(t, bin, "drainTimeout: 10m\n")
	_, fr := p.session(t, "player-2")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectDrainNotice(t, fr)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.Next(); err == nil {
		t.Fatal("session still open after the second SIGTERM")
	}
	p.waitExit(t, testTimeout)
}
