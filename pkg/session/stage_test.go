package session

import (
	"fmt"
	"sync"
	"testing"
)

func TestStagesAndBroadcast(t *testing.T) {
	h, _ := newHarness(t, Options{})
	var clients []*rawClient
	var sessions []*Session
	for i := range 4 {
		rc := h.dial()
		clients = append(clients, rc)
		sessions = append(sessions, h.auth(rc, fmt.Sprintf("p%d", i)))
	}
	for _, s := range sessions[:3] {
		s.SetStageID(7)
	}
	sessions[3].SetStageID(8)
	if n := len(h.mgr.StageMembers(7)); n != 3 {
		t.Fatalf("stage 7 has %d members", n)
	}
	sent, err := h.mgr.Broadcast(7, "RoomNotify", []byte("hello room"), sessions[0])
	if err != nil || sent != 2 {
		t.Fatalf("Broadcast = %d, %v", sent, err)
	}
	for _, rc := range clients[1:3] {
		if r := rc.read(); r.ID != "RoomNotify" || r.MsgSeq != 0 || r.StageID != 7 || string(r.Payload) != "hello room" {
			t.Fatalf("broadcast push = %+v", r)
		}
	}
	// Neither the sender nor the other stage got it: their next packet is the
	// echo of a heartbeat.
	for _, rc := range []*rawClient{clients[0], clients[3]} {
		rc.send("@Heart@Beat@", 0, 0, nil)
		if r := rc.read(); r.ID != "@Heart@Beat@" {
			t.Fatalf("unexpected packet %+v", r)
		}
	}
	// Moving and closing keep the index right.
	sessions[1].SetStageID(8)
	clients[2].c.Close()
	waitFor(t, "closed session to leave its stage", func() bool { return len(h.mgr.StageMembers(7)) == 1 })
	if n := len(h.mgr.StageMembers(8)); n != 2 {
		t.Fatalf("stage 8 has %d members", n)
	}
	sessions[0].SetStageID(0)
	if n := len(h.mgr.StageMembers(7)); n != 0 {
		t.Fatalf("stage 7 has %d members after leaving", n)
	}
	if _, err := h.mgr.Broadcast(8, "", nil, nil); err == nil {
		t.Fatal("broadcast with an empty MsgId accepted")
	}
}

// Concurrent stage changes never leave a session in two stages.
func TestSetStageConcurrent(t *testing.T) {
	h, _ := newHarness(t, Options{})
	s := h.auth(h.dial(), "racer")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				s.SetStageID(int64(1 + (i+j)%5))
			}
		}()
	}
	wg.Wait()
	total := 0
	for stage := int64(1); stage <= 5; stage++ {
		total += len(h.mgr.StageMembers(stage))
	}
	if total != 1 || len(h.mgr.StageMembers(s.StageID())) != 1 {
		t.Fatalf("session indexed in %d stages (its stage %d)", total, s.StageID())
	}
}
