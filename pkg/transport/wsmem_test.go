package transport

import (
	"testing"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Once a large message has been consumed, a WebSocket connection waiting
// for the next one holds no large buffer: its charge is back in the budget
// while it waits, not only when the next message comes.
func TestWebSocketReleasesLargeBufferWhileWaiting(t *testing.T) {
	b := protocol.NewBudget(4 << 20)
	wc, cli := wsPair(t, WebSocketOptions{MaxPacketSize: 1 << 20, Budget: b})
	if err := cli.WriteMessage(websocket.BinaryMessage, protocol.AppendFrame(nil, make([]byte, 200<<10))); err != nil {
		t.Fatal(err)
	}
	body, err := wc.ReadFrame()
	if err != nil || len(body) != 200<<10 {
		t.Fatalf("large frame: %d bytes, %v", len(body), err)
	}
	if b.Used() == 0 {
		t.Fatal("large message not charged to the budget")
	}
	next := make(chan []byte, 1)
	go func() {
		body, err := wc.ReadFrame()
		if err != nil {
			t.Error(err)
		}
		next <- append([]byte(nil), body...)
	}()
	testutil.WaitFor(t, "budget given back while waiting", func() bool { return b.Used() == 0 })
	if err := cli.WriteMessage(websocket.BinaryMessage, protocol.AppendFrame(nil, []byte("small"))); err != nil {
		t.Fatal(err)
	}
	if got := <-next; string(got) != "small" {
		t.Fatalf("next frame %q", got)
	}
}
