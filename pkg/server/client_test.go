package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/client"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// TestEchoWithGoClient runs the echo app against the Go client: one request,
// then many in flight on one session, over each transport.
func TestEchoWithGoClient(t *testing.T) {
	c, certs := testConfig(t)
	srv := startServer(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, tc := range []struct {
		name string
		addr string
		opts client.Options
	}{
		{"tcp", srv.Addr(transport.KindTCP).String(), client.Options{}},
		{"tls", srv.Addr(transport.KindTLSTCP).String(), client.Options{TLSConfig: certs.ClientConfig()}},
		{"ws", wsURL("ws", srv.Addr(transport.KindWebSocket)), client.Options{}},
		{"wss", wsURL("wss", srv.Addr(transport.KindWSS)), client.Options{TLSConfig: certs.ClientConfig()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cl *client.Client
			var err error
			if strings.HasPrefix(tc.addr, "ws") {
				cl, err = client.DialWebSocket(ctx, tc.addr, nil, tc.opts)
			} else {
				cl, err = client.Dial(ctx, tc.addr, tc.opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			resp, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte("go-"+tc.name))
			if err != nil || resp.MsgID != "AuthenticateReply" {
				t.Fatalf("auth: %+v %v", resp, err)
			}
			resp, err = cl.Request(ctx, "EchoRequest", 99, []byte("one"))
			if err != nil || resp.MsgID != "EchoReply" || resp.StageID != 99 || string(resp.Payload) != "one" || resp.ErrorCode != 0 {
				t.Fatalf("echo: %+v %v", resp, err)
			}
			// 150 requests in flight at once on one session (under the default burst of 200).
			var wg sync.WaitGroup
			errs := make(chan error, 150)
			for i := 0; i < 150; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					want := fmt.Sprintf("req-%d", i)
					r, err := cl.Request(ctx, "EchoRequest", int64(i), []byte(want))
					if err != nil {
						errs <- err
						return
					}
					if string(r.Payload) != want || r.StageID != int64(i) {
						errs <- fmt.Errorf("request %d got %q stage %d", i, r.Payload, r.StageID)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// One-way packets come back as pushes.
			if err := cl.Send("ChatNotify", 5, []byte("push me")); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-cl.Pushes():
				if p.MsgID != "ChatNotify" || string(p.Payload) != "push me" || p.MsgSeq != 0 {
					t.Fatalf("push = %+v", p)
				}
			case <-ctx.Done():
				t.Fatal("no push")
			}
		})
	}
}

// TestHundredsOfConcurrentSessions opens 400 sessions at once, each
// authenticating and echoing a few requests concurrently.
func TestHundredsOfConcurrentSessions(t *testing.T) {
	const sessions, perSession = 400, 5
	c, _ := testConfig(t)
	srv := startServer(t, c)
	addr := srv.Addr(transport.KindTCP).String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clients := make([]*client.Client, sessions)
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := client.Dial(ctx, addr, client.Options{})
			if err != nil {
				errs <- err
				return
			}
			clients[i] = cl
			if _, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte(fmt.Sprintf("player-%d", i))); err != nil {
				errs <- fmt.Errorf("auth %d: %w", i, err)
				return
			}
			var inner sync.WaitGroup
			for j := range perSession {
				inner.Add(1)
				go func() {
					defer inner.Done()
					want := fmt.Sprintf("%d/%d", i, j)
					r, err := cl.Request(ctx, "EchoRequest", 0, []byte(want))
					if err != nil || string(r.Payload) != want {
						errs <- fmt.Errorf("session %d request %d: %v %v", i, j, r, err)
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := srv.Manager().Count(); n != sessions {
		t.Fatalf("server holds %d sessions, want %d", n, sessions)
	}
	for _, cl := range clients {
		cl.Close()
	}
	waitFor(t, "every session to end", func() bool { return srv.Manager().Count() == 0 })
	if got := srv.Manager().Stats().Closed[session.ClientClosed]; got != sessions {
		t.Fatalf("ClientClosed = %d, want %d", got, sessions)
	}
}

// TestGoClientSeesFailedAuthAndKick checks the client-visible parts of the
// auth gate and supersede with the real echo app.
func TestGoClientSeesFailedAuthAndKick(t *testing.T) {
	c, _ := testConfig(t)
	srv := startServer(t, c)
	addr := srv.Addr(transport.KindTCP).String()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	first, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// Empty credentials fail with ErrorCode 5 and the connection stays usable.
	resp, err := first.Authenticate(ctx, "AuthenticateRequest", nil)
	var codeErr *client.ErrorCodeError
	if !errors.As(err, &codeErr) || resp == nil || resp.ErrorCode != protocol.AuthenticationFailed {
		t.Fatalf("empty credentials: %+v %v", resp, err)
	}
	if _, err := first.Authenticate(ctx, "AuthenticateRequest", []byte("same-account")); err != nil {
		t.Fatal(err)
	}
	second, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if _, err := second.Authenticate(ctx, "AuthenticateRequest", []byte("same-account")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-first.Pushes():
		if p.MsgID != session.KickMsgID {
			t.Fatalf("push = %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("no kick")
	}
	select {
	case <-first.Done():
	case <-ctx.Done():
		t.Fatal("superseded connection not closed")
	}
	if _, err := second.Request(ctx, "EchoRequest", 0, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// TestSignedTokens covers token mode and tokens in open mode with the real
// echo app: a token signed with the shared key authenticates its account on
// any server holding the key; expired, tampered and wrongly-signed tokens get
// ErrorCode 5 and the connection stays open.
func TestSignedTokens(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	keyFile := t.TempDir() + "/signing-key"
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := session.NewTokens(key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := signer.Issue("player-7", 42)
	other, _ := session.NewTokens([]byte("another-key-another-key-another!"), time.Minute)
	wrongKey, _ := other.Issue("player-7", 42)
	expiredSigner, _ := session.NewTokens(key, time.Nanosecond)
	expired, _ := expiredSigner.Issue("player-7", 42)
	tampered := good[:len(good)-2] + "xx"

	for _, mode := range []string{"token", "open"} {
		t.Run(mode, func(t *testing.T) {
			c, _ := testConfig(t)
			c.Auth = config.Auth{Mode: mode, SigningKeyFile: keyFile, ReconnectTokenLifetime: config.D(time.Minute)}
			srv := startServer(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			cl, err := client.Dial(ctx, srv.Addr(transport.KindTCP).String(), client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for _, bad := range []string{wrongKey, expired, tampered} {
				resp, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte(bad))
				if resp == nil || resp.ErrorCode != protocol.AuthenticationFailed {
					t.Fatalf("bad token accepted: %+v %v", resp, err)
				}
			}
			if mode == "token" {
				// Plain credentials are not a token: refused in token mode.
				if resp, _ := cl.Authenticate(ctx, "AuthenticateRequest", []byte("player-7")); resp == nil || resp.ErrorCode != protocol.AuthenticationFailed {
					t.Fatalf("plain credentials in token mode: %+v", resp)
				}
			}
			if _, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte(good)); err != nil {
				t.Fatalf("good token: %v", err)
			}
			s, ok := srv.Manager().ByAccount("player-7")
			if !ok || s.StageID() != 42 {
				t.Fatalf("token account/stage not applied: %v %v", ok, s)
			}
			if r, err := cl.Request(ctx, "EchoRequest", 0, []byte("hi")); err != nil || string(r.Payload) != "hi" {
				t.Fatalf("echo after token auth: %v %v", r, err)
			}
		})
	}
}
