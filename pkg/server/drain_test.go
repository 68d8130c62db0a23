package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/client"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// drainConfig is testConfig with a shared signing key and a short drain.
func drainConfig(t *testing.T, keyFile string, drain time.Duration) config.Config {
	t.Helper()
	c, _ := testConfig(t)
	c.Auth.SigningKeyFile = keyFile
	c.DrainTimeout = config.D(drain)
	return c
}

func TestDrain(t *testing.T) {
	key := []byte("drain-test-key-drain-test-key-32")
	keyFile := t.TempDir() + "/signing-key"
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	const drain = 1500 * time.Millisecond
	srv := startServer(t, drainConfig(t, keyFile, drain))
	addr := srv.Addr(transport.KindTCP).String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const n = 5
	clients := make([]*client.Client, n)
	for i := range clients {
		cl, err := client.Dial(ctx, addr, client.Options{DisableResume: true})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte(fmt.Sprintf("player-%d", i))); err != nil {
			t.Fatal(err)
		}
		s, _ := srv.Manager().ByAccount(fmt.Sprintf("player-%d", i))
		s.SetStageID(int64(100 + i))
		// A push queued before the drain must arrive before the notice.
		if err := s.Push("News", 0, []byte("before drain")); err != nil {
			t.Fatal(err)
		}
		clients[i] = cl
	}

	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(context.Background()) }()

	waitFor(t, "readyz to turn 503", func() bool {
		resp, err := http.Get("http://" + srv.AdminAddr().String() + "/readyz")
		if err != nil {
			return true // the admin endpoint already stopped: not ready either
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	waitFor(t, "listener to close", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})

	verifier, err := session.NewTokens(key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	notices := make([]session.DrainNotice, n)
	seen := map[int64]bool{}
	for i, cl := range clients {
		if p := <-cl.Pushes(); p.MsgID != "News" {
			t.Fatalf("client %d: first push %q, want the one queued before the drain", i, p.MsgID)
		}
		p := <-cl.Pushes()
		if p.MsgID != session.DrainMsgID || json.Unmarshal(p.Payload, &notices[i]) != nil {
			t.Fatalf("client %d: drain notice %+v", i, p)
		}
		claims, err := verifier.Verify(notices[i].ReconnectToken)
		if err != nil || claims.Account != fmt.Sprintf("player-%d", i) || claims.StageID != int64(100+i) {
			t.Fatalf("client %d: token %+v %v", i, claims, err)
		}
		if r := notices[i].RetryAfterMs; r <= 0 || r > int64(drain/time.Millisecond) || seen[r] {
			t.Fatalf("client %d: retryAfterMs %d not spread within the drain", i, r)
		}
		seen[notices[i].RetryAfterMs] = true
	}
	// One client leaves on its own; the others are closed by the server, each
	// no earlier than the retry time it was told.
	clients[0].Close()
	for i, cl := range clients[1:] {
		select {
		case <-cl.Done():
		case <-ctx.Done():
			t.Fatal("session not closed by the drain")
		}
		if held := time.Since(start); held < time.Duration(notices[i+1].RetryAfterMs)*time.Millisecond {
			t.Errorf("client %d closed after %s, before its retryAfterMs %d", i+1, held, notices[i+1].RetryAfterMs)
		}
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	st := srv.Manager().Stats()
	if st.Closed[session.ServerShutdown] != n-1 || st.Closed[session.ClientClosed] != 1 || st.Active != 0 {
		t.Fatalf("closes: %+v", st.Closed)
	}

	// The reconnect token works on another server holding the same key.
	other := startServer(t, drainConfig(t, keyFile, drain))
	cl, err := client.Dial(ctx, other.Addr(transport.KindTCP).String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte(notices[3].ReconnectToken)); err != nil {
		t.Fatalf("reconnect with token: %v", err)
	}
	s, ok := other.Manager().ByAccount("player-3")
	if !ok || s.StageID() != 103 {
		t.Fatalf("reconnected session: %v %v", ok, s)
	}
}

// blockingHandler is the echo app, except that "BlockRequest" never returns
// until release is closed: its session cannot end on its own.
type blockingHandler struct {
	session.HandlerFuncs
	release chan struct{}
}

func (h blockingHandler) OnPacket(s *session.Session, p *session.Packet) {
	if p.MsgID == "BlockRequest" {
		<-h.release
		return
	}
	_ = s.Reply(p, protocol.Success, p.Payload)
}

func TestDrainTimeoutAndAbort(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drain time.Duration
		abort bool
	}{
		{"timeout", 300 * time.Millisecond, false},
		{"abort", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := testConfig(t)
			c.DrainTimeout = config.D(tc.drain)
			h := blockingHandler{
				HandlerFuncs: session.HandlerFuncs{Auth: func(*session.Session, *session.Packet) session.AuthResult {
					return session.AuthResult{AccountID: "stuck"}
				}},
				release: make(chan struct{}),
			}
			defer close(h.release)
			srv, err := newServer(c, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			cl, err := client.Dial(ctx, srv.Addr(transport.KindTCP).String(), client.Options{DisableResume: true})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if _, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte("x")); err != nil {
				t.Fatal(err)
			}
			if err := cl.Send("BlockRequest", 0, nil); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "handler to block", func() bool { return srv.Manager().Stats().Transports[transport.KindTCP].PacketsIn >= 2 })
			done := make(chan error, 1)
			go func() { done <- srv.Drain(context.Background()) }()
			if tc.abort {
				<-cl.Pushes() // the drain has begun
				srv.Abort()
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatal("drain did not end")
			}
			select {
			case <-cl.Done():
			case <-ctx.Done():
				t.Fatal("stuck session still open after the drain")
			}
		})
	}
}
