package main

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
)

// packet is one packet the page received.
type packet struct {
	MsgID   string `json:"msgId"`
	Seq     int    `json:"seq"`
	Stage   int64  `json:"stage"`
	Code    int    `json:"code"`
	Payload string `json:"payload"`
}

type roomsResult struct {
	WS    []packet `json:"ws"`
	WSS   []packet `json:"wss"`
	Error string   `json:"error"`
}

// Headless Chromium speaks to the example over a browser WebSocket on the
// HTTP port and one on the HTTPS port (the in-memory certificate, which the
// browser is told to accept): both join a room, one chats, the other gets
// the push.
func TestBrowserRooms(t *testing.T) {
	testutil.Chromium(t) // fail (or skip under -short) before starting the game server
	g := startTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := url.Values{"ws": {"ws://" + g.httpAddr.String() + "/ws"}, "wss": {"wss://" + g.httpsAddr.String() + "/ws"}}
	res := testutil.BrowserPage[roomsResult](t, ctx, "testdata/rooms.html", q.Encode(), "--ignore-certificate-errors")
	if res.Error != "" {
		t.Fatalf("browser: %s", res.Error)
	}
	check := func(name string, got, want []packet) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s packets: %+v, want %+v", name, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s packet %d = %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}
	check("ws", res.WS, []packet{
		{MsgID: "AuthenticateReply", Seq: 1, Payload: "browser-ws"},
		{MsgID: "JoinRoomReply", Seq: 2, Stage: 9, Payload: "1"},
		{MsgID: PlayerJoinedMsgID, Stage: 9, Payload: "browser-wss"},
		{MsgID: "ChatReply", Seq: 3},
	})
	check("wss", res.WSS, []packet{
		{MsgID: "AuthenticateReply", Seq: 1, Payload: "browser-wss"},
		{MsgID: "JoinRoomReply", Seq: 2, Stage: 9, Payload: "2"},
		{MsgID: ChatNoticeMsgID, Stage: 9, Payload: "browser-ws: hi from chromium"},
	})
}
