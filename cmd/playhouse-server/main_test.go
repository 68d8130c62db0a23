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
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "read config"},
		{[]string{"--config", bad}, "limits.maxPacketSize"},
		{[]string{"--wss-addr", "127.0.0.1:0"}, "certFile and keyFile are required"},
		{[]string{"--app", "chess"}, "app: must be"},
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

// TestProcessServesAndStopsOnSIGTERM builds the real binary, runs it, talks to
// it over TCP and stops it with SIGTERM.
func TestProcessServesAndStopsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "playhouse-server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "config.yaml")
	_ = os.WriteFile(cfg, []byte("transports:\n  tcp: {port: 0}\n  websocket: {port: 0}\nadmin: {port: 0}\n"), 0o600)
	cmd := exec.Command(bin, "--config", cfg, "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Learn the bound addresses from the structured log.
	addrs := map[string]string{}
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
				addrs[rec.Transport] = rec.Addr
			case "admin listening":
				addrs["admin"] = rec.Addr
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
	if addrs["tcp"] == "" || addrs["ws"] == "" || addrs["admin"] == "" {
		t.Fatalf("addresses: %v", addrs)
	}
	resp, err := http.Get("http://" + addrs["admin"] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz = %d", resp.StatusCode)
	}
	c, err := net.Dial("tcp", addrs["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	fr := protocol.NewFrameReader(c, 1<<20)
	for i, id := range []string{"AuthenticateRequest", "EchoRequest"} {
		b, _ := protocol.AppendRequest(nil, id, uint16(i+1), 0, []byte("player-1"))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		body, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if h, p, err := protocol.ParseResponse(body); err != nil || h.ErrorCode != 0 || string(p) != "player-1" {
			t.Fatalf("%s reply: %+v %q %v", id, h, p, err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("client after SIGTERM: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("process did not exit after SIGTERM")
	}
}
