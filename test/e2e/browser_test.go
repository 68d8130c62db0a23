// Package e2e holds end-to-end tests that cross process boundaries: a real
// browser talking to the engine.
package e2e

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/apps"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

type reply struct {
	Len        int    `json:"len"`
	FrameBytes int    `json:"frameBytes"`
	MsgID      string `json:"msgId"`
	Seq        int    `json:"seq"`
	Stage      int64  `json:"stage"`
	Code       int    `json:"code"`
	Orig       int    `json:"orig"`
	Payload    string `json:"payload"`
}

type browserResult struct {
	Replies       []reply `json:"replies"`
	TextCloseCode int     `json:"textCloseCode"`
	Error         string  `json:"error"`
}

// TestBrowserWebSocketClient runs headless Chromium against the engine: a
// page speaks the wire protocol over a real browser WebSocket (heartbeat,
// authentication, request/reply, one-way echo, and a text message that must
// close with 1003) and posts what it saw back to the test.
func TestBrowserWebSocketClient(t *testing.T) {
	testutil.Chromium(t) // fail (or skip under -short) before starting anything
	c := config.Default()
	c.Transports.TCP.Enabled = false
	c.Transports.WebSocket.Port = 0
	c.Admin.Port = 0
	srv, err := serverconfig.NewApp(c, apps.Builtin(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	wsURL := "ws://" + srv.Addr(transport.KindWebSocket).String() + "/ws"
	res := testutil.BrowserPage[browserResult](t, ctx, "testdata/browser.html", "ws="+url.QueryEscape(wsURL))
	if res.Error != "" {
		t.Fatalf("browser: %s", res.Error)
	}
	want := []reply{
		{Len: 29, FrameBytes: 33, MsgID: "@Heart@Beat@", Seq: 0, Stage: 7},
		{MsgID: "AuthenticateReply", Seq: 1, Payload: "browser-player"},
		{MsgID: "EchoReply", Seq: 2, Stage: 1234, Payload: "hello from chromium"},
		{MsgID: "ChatNotify", Seq: 0, Stage: 5, Payload: "one-way"},
	}
	if len(res.Replies) != len(want) {
		t.Fatalf("replies: %+v", res.Replies)
	}
	for i, w := range want {
		g := res.Replies[i]
		if g.MsgID != w.MsgID || g.Seq != w.Seq || g.Stage != w.Stage || g.Code != 0 || g.Orig != 0 || g.Payload != w.Payload || g.FrameBytes != g.Len+4 {
			t.Errorf("reply %d = %+v, want %+v (one whole frame per message)", i, g, w)
		}
	}
	if res.TextCloseCode != 1003 {
		t.Errorf("text message close code = %d, want 1003", res.TextCloseCode)
	}
	testutil.WaitFor(t, "the server to count the ProtocolError close", func() bool {
		return srv.Manager().Stats().Closed[session.ProtocolError] == 1
	})
}
