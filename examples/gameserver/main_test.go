package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/client"
	"github.com/playhouse-k8s/playhouse/pkg/server"
)

const testTimeout = testutil.Timeout

// startTest runs the example on loopback free ports until the test ends.
func startTest(t *testing.T) *gameServer {
	t.Helper()
	g, err := start(t.Context(), "127.0.0.1:0", "127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
		defer cancel()
		if err := g.stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return g
}

// getJSON reads an endpoint of the example's HTTP port.
func getJSON(t *testing.T, g *gameServer, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + g.httpAddr.String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// join dials, authenticates as account and joins room.
func join(t *testing.T, url string, tlsConfig *tls.Config, account string, room int64) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := client.DialWebSocket(ctx, url, nil, client.Options{TLSConfig: tlsConfig, DisableResume: true})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	if r, err := c.Authenticate(ctx, "AuthenticateRequest", []byte(account)); err != nil || r.Err() != nil {
		t.Fatalf("authenticate %s: %v %v", account, err, r.Err())
	}
	r, err := c.Request(ctx, JoinRoomMsgID, room, nil)
	if err != nil || r.Err() != nil || r.MsgID != "JoinRoomReply" {
		t.Fatalf("join room %d: %v %+v", room, err, r)
	}
	return c
}

// nextPush waits for the client's next push.
func nextPush(t *testing.T, c *client.Client) *client.Response {
	t.Helper()
	select {
	case p := <-c.Pushes():
		return p
	case <-time.After(testTimeout):
		t.Fatal("no push")
		return nil
	}
}

// The Go client over ws (the HTTP port, beside the API) and over wss (the
// HTTPS port, the in-memory certificate): rooms, a request/reply and a push
// to the room's members; the HTTP API and the mounted admin endpoints see
// the sessions of the mounted handlers.
func TestGoClientOverWSAndWSS(t *testing.T) {
	g := startTest(t)
	var health map[string]any
	getJSON(t, g, "/api/health", &health)
	if health["status"] != "ok" {
		t.Fatalf("health = %v", health)
	}
	roots := x509.NewCertPool()
	roots.AddCert(g.cert)
	alice := join(t, "ws://"+g.httpAddr.String()+"/ws", nil, "alice", 7)
	bob := join(t, "wss://"+g.httpsAddr.String()+"/ws", &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, "bob", 7)
	if p := nextPush(t, alice); p.MsgID != PlayerJoinedMsgID || string(p.Payload) != "bob" || p.StageID != 7 {
		t.Fatalf("alice's push = %+v", p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	r, err := alice.Request(ctx, ChatMsgID, 0, []byte("hello"))
	if err != nil || r.Err() != nil || r.MsgID != "ChatReply" {
		t.Fatalf("chat: %v %+v", err, r)
	}
	if p := nextPush(t, bob); p.MsgID != ChatNoticeMsgID || string(p.Payload) != "alice: hello" || p.StageID != 7 {
		t.Fatalf("bob's push = %+v", p)
	}

	var rooms []Stage
	getJSON(t, g, "/api/stages", &rooms)
	if len(rooms) != 1 || rooms[0] != (Stage{ID: 7, Members: 2}) {
		t.Fatalf("stages = %+v", rooms)
	}
	var st server.Status
	getJSON(t, g, "/admin/status", &st)
	if st.Sessions != 2 || st.SessionsByTransport["ws"] != 1 || st.SessionsByTransport["wss"] != 1 || len(st.Listeners) != 0 {
		t.Fatalf("status = %+v", st)
	}
	resp, err := http.Get("http://" + g.httpAddr.String() + "/admin/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %v %v", err, resp)
	}
	resp.Body.Close()
}
