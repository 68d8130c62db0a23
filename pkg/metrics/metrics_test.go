package metrics

import (
	"testing"
	"time"
)

// The observer methods run on every packet: they must not allocate.
func TestObserverZeroAlloc(t *testing.T) {
	m := New()
	allocs := testing.AllocsPerRun(1000, func() {
		m.PacketReceived(64)
		m.PacketSent(128)
		m.HandlerDone(3 * time.Microsecond)
	})
	if allocs != 0 {
		t.Fatalf("observer allocates %.1f times per packet", allocs)
	}
}

// Without an attached manager the collector reports nothing and does not panic.
func TestUnattachedCollector(t *testing.T) {
	fams, err := New().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "playhouse_sessions_active" {
			t.Fatal("sessions_active reported without a manager")
		}
	}
}
