package server_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/playhouse-k8s/playhouse/pkg/client"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

func TestRelayApp(t *testing.T) {
	c, _ := testConfig(t)
	c.App = "relay"
	srv := startServer(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dial := func(name string, stage int64) *client.Client {
		t.Helper()
		cl, err := client.Dial(ctx, srv.Addr(transport.KindTCP).String(), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		if _, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte(name)); err != nil {
			t.Fatal(err)
		}
		if stage != 0 {
			r, err := cl.Request(ctx, "JoinStageRequest", stage, nil)
			if err != nil || r.ErrorCode != 0 || r.MsgID != "JoinStageReply" {
				t.Fatalf("join: %+v %v", r, err)
			}
		}
		return cl
	}
	a, b, x := dial("a", 42), dial("b", 42), dial("x", 43)
	if err := a.Send("ChatNotify", 42, []byte("hi room")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.Pushes():
		if p.MsgID != "ChatNotify" || p.StageID != 42 || string(p.Payload) != "hi room" {
			t.Fatalf("relayed push = %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("push not relayed")
	}
	// Requests are echoed; the sender and the other stage got no push.
	for i, cl := range []*client.Client{a, x} {
		if r, err := cl.Request(ctx, "PingRequest", 0, []byte(fmt.Sprint(i))); err != nil || string(r.Payload) != fmt.Sprint(i) {
			t.Fatalf("echo: %+v %v", r, err)
		}
		select {
		case p := <-cl.Pushes():
			t.Fatalf("client %d got %+v", i, p)
		default:
		}
	}
	if r, _ := x.Request(ctx, "JoinStageRequest", 0, nil); r == nil || r.ErrorCode != protocol.JoinStageFailed {
		t.Fatalf("join stage 0 = %+v", r)
	}
}
