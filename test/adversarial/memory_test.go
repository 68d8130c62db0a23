package adversarial

import (
	"encoding/binary"
	"net"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// liveHeap is the heap reachable after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// gauge reads a gauge from the server's metrics registry.
func (e *edge) gauge(t *testing.T, name string) float64 {
	t.Helper()
	fams, err := e.srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("gauge %s not found", name)
	return 0
}

// Finding 6 (transport half): a flood of half-sent large frames over TCP and
// WebSocket cannot hold more than the process-wide inbound budget; the
// connections that would pass it are closed, and the budget is given back.
func TestHalfSentFramesStayWithinBudget(t *testing.T) {
	const budget = 6 << 20
	e := start(t, func(c *config.Config) {
		c.Limits.InboundBudgetBytes = budget
		c.Limits.MaxConnectionsPerIP = 100
	})
	const n = 8
	body := make([]byte, 1<<20) // of a claimed 2 MiB frame
	var tcp []net.Conn
	for i := range n {
		c := dialFrom(t, "127.0.0.2", e.addr(transport.KindTCP))
		newFrames(t, c).auth("half-tcp" + itoa(uint64(i)))
		tcp = append(tcp, c)
	}
	var wss []*websocket.Conn
	for i := range n {
		ws, _, err := e.wsDial(t, transport.KindWebSocket, "127.0.0.3", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := protocol.AppendRequest(nil, "AuthenticateRequest", 1, 0, []byte("half-ws"+itoa(uint64(i))))
		if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		wss = append(wss, ws)
	}
	var wg sync.WaitGroup
	for _, c := range tcp {
		wg.Go(func() {
			_, _ = c.Write(binary.LittleEndian.AppendUint32(nil, 2<<20-64))
			_, _ = c.Write(body)
		})
	}
	for _, ws := range wss {
		wg.Go(func() {
			// A message that never ends: the library sends it as fragments.
			w, err := ws.NextWriter(websocket.BinaryMessage)
			if err == nil {
				_, _ = w.Write(binary.LittleEndian.AppendUint32(nil, 2<<20-64))
				_, _ = w.Write(body)
			}
		})
	}
	wg.Wait()
	// Every connection either holds its partial frame within the budget or
	// was closed for passing it; at least the surplus was closed.
	testutil.WaitFor(t, "connections past the budget closed", func() bool {
		st := e.srv.Manager().Stats()
		return st.Closed[session.InboundBudgetExceeded]+st.Closed[session.ReadError] >= 2*n-budget/(1<<20)
	})
	// The gauge reports the budget (read while nothing moves).
	testutil.WaitFor(t, "gauge equal to the budget in use", func() bool {
		u := e.srv.InboundBudget().Used()
		return int64(e.gauge(t, "playhouse_inbound_partial_bytes")) == u && e.srv.InboundBudget().Used() == u
	})
	if used := e.srv.InboundBudget().Used(); used > budget || used <= 0 {
		t.Fatalf("budget used %d of %d", used, budget)
	}
	for _, c := range tcp {
		c.Close()
	}
	for _, ws := range wss {
		ws.NetConn().Close()
	}
	testutil.WaitFor(t, "budget given back", func() bool { return e.srv.InboundBudget().Used() == 0 })
}

// Finding 1: a header flood (many connections each sending a megabyte of
// unfinished headers) is cut at the header limit; the server's live heap
// stays small.
func TestHeaderFloodHeapBounded(t *testing.T) {
	const conns = 60
	e := start(t, func(c *config.Config) { c.Limits.MaxConnectionsPerIP = conns })
	before := liveHeap()
	line := []byte("X-Flood: " + strings.Repeat("a", 4000) + "\r\n")
	var wg sync.WaitGroup
	var held []net.Conn
	for range conns {
		c := dialFrom(t, "127.0.0.2", e.addr(transport.KindWebSocket))
		held = append(held, c)
		wg.Go(func() {
			if _, err := c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
				return
			}
			for sent := 0; sent < 1<<20; sent += len(line) {
				if _, err := c.Write(line); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	growth := int64(liveHeap()) - int64(before)
	if growth > 16<<20 {
		t.Fatalf("live heap grew by %d MiB during a flood of %d x 1 MiB headers", growth>>20, conns)
	}
	for _, c := range held {
		expectClosedByServer(t, c, "header flood")
	}
	e.waitRejected(t, session.RejectUpgrade, conns)
}
