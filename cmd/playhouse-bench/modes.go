package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Modes (--mode).
const (
	modeEcho      = "echo"
	modeConnect   = "connect"
	modeIdle      = "idle"
	modeBroadcast = "broadcast"
)

// broadcastMsgID is the one-way packet the broadcast mode's sender relays.
const broadcastMsgID = "BenchBroadcast"

// target is the server under measurement as seen from the load generator.
type target struct {
	pid   int    // 0: unknown (no CPU figures)
	probe *probe // memory figures
}

// cpuMeter measures a server's CPU time over a window.
type cpuMeter struct {
	pid   int
	start float64
}

func (t target) startCPU() *cpuMeter {
	m := &cpuMeter{pid: t.pid}
	if t.pid > 0 {
		if s, err := procCPUSeconds(t.pid); err == nil {
			m.start = s
		} else {
			m.pid = 0
		}
	}
	return m
}

// seconds returns the CPU seconds used since start, or 0 when unknown.
func (m *cpuMeter) seconds() float64 {
	if m.pid == 0 {
		return 0
	}
	s, err := procCPUSeconds(m.pid)
	if err != nil {
		return 0
	}
	return s - m.start
}

// perCPU divides n by CPU seconds (0 when unknown).
func perCPU(n, cpu float64) float64 {
	if cpu <= 0 {
		return 0
	}
	return n / cpu
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func quantilesMs(h *histogram) map[string]float64 {
	return map[string]float64{
		"p50": msOf(h.quantile(0.50)), "p90": msOf(h.quantile(0.90)), "p99": msOf(h.quantile(0.99)),
		"p999": msOf(h.quantile(0.999)), "max": msOf(h.max),
	}
}

// errCounter counts errors by kind.
type errCounter struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (e *errCounter) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]uint64{}
	}
	e.m[errorKind(err)]++
}

func (e *errCounter) snapshot() map[string]uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

func printJSONOr(stdout io.Writer, jsonOut bool, v any, text func()) error {
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text()
	return nil
}

func printErrors(stdout io.Writer, errs map[string]uint64) {
	kinds := make([]string, 0, len(errs))
	for k := range errs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	if len(kinds) == 0 {
		fmt.Fprintln(stdout, "errors    none")
	}
	for _, k := range kinds {
		fmt.Fprintf(stdout, "errors    %d %s\n", errs[k], k)
	}
}

// connectSummary is the result of --mode connect.
type connectSummary struct {
	Transport string             `json:"transport"`
	Workers   int                `json:"workers"`
	Seconds   float64            `json:"seconds"`
	Cycles    uint64             `json:"cycles"`
	PerSecond float64            `json:"cyclesPerSecond"`
	Errors    map[string]uint64  `json:"errors"`
	LatencyMs map[string]float64 `json:"connectAuthLatencyMs"`
	// ServerCPUSeconds is the server's CPU time over the run (0: unknown).
	ServerCPUSeconds float64 `json:"serverCpuSeconds"`
	// PerServerCPUSecond is cycles per server CPU-second (0: unknown).
	PerServerCPUSecond float64 `json:"cyclesPerServerCpuSecond"`
}

// runConnect is --mode connect: --sessions loops each dial, authenticate
// and close, as fast as they can, for --duration. The latency is dial to
// authenticate reply.
func runConnect(ctx context.Context, o options, d *dialer, t target, stdout, stderr io.Writer) error {
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var (
		errs   errCounter
		mu     sync.Mutex
		h      histogram
		cycles atomic.Uint64
		wg     sync.WaitGroup
	)
	cpu := t.startCPU()
	start := time.Now()
	for w := range o.sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local histogram
			defer func() {
				mu.Lock()
				h.merge(&local)
				mu.Unlock()
			}()
			for i := 0; runCtx.Err() == nil; i++ {
				t0 := time.Now()
				c, err := d.dialAuth(runCtx, fmt.Sprintf("bench-%d-%d-%d", os.Getpid(), w, i))
				if err != nil {
					// A dial cut by the end of the run is not an error (the
					// context's deadline can pass before its Err reports it).
					if end, _ := runCtx.Deadline(); runCtx.Err() == nil && time.Now().Before(end) {
						errs.add(err)
					}
					continue
				}
				local.record(time.Since(t0))
				c.close()
				cycles.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpuSec := cpu.seconds()
	s := connectSummary{
		Transport: o.transport, Workers: o.sessions, Seconds: elapsed.Seconds(), Cycles: cycles.Load(),
		PerSecond: float64(cycles.Load()) / elapsed.Seconds(), Errors: errs.snapshot(), LatencyMs: quantilesMs(&h),
		ServerCPUSeconds: cpuSec, PerServerCPUSecond: perCPU(float64(cycles.Load()), cpuSec),
	}
	if s.Cycles == 0 {
		return fmt.Errorf("no connect cycle succeeded (%v)", s.Errors)
	}
	return printJSONOr(stdout, o.jsonOut, s, func() {
		fmt.Fprintf(stdout, "connect+authenticate+close over %s, %d loops, %.1fs\n", s.Transport, s.Workers, s.Seconds)
		fmt.Fprintf(stdout, "cycles    %d, %.0f/s; server CPU %.2fs, %.0f cycles per server CPU-second\n",
			s.Cycles, s.PerSecond, s.ServerCPUSeconds, s.PerServerCPUSecond)
		l := s.LatencyMs
		fmt.Fprintf(stdout, "latency   p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms\n",
			l["p50"], l["p90"], l["p99"], l["p999"], l["max"])
		printErrors(stdout, s.Errors)
	})
}

// openSessions dials and authenticates n sessions at --connect-rate with a
// few parallel dialers; failures are counted, not fatal.
func openSessions(ctx context.Context, o options, d *dialer, n int, errs *errCounter) []*rawConn {
	pace := rate.NewLimiter(rate.Limit(o.connectRate), 16)
	var (
		mu    sync.Mutex
		conns = make([]*rawConn, 0, n)
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for range min(n, 16) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || pace.Wait(ctx) != nil {
					return
				}
				c, err := d.dialAuth(ctx, fmt.Sprintf("bench-%d-%d", os.Getpid(), i))
				if err != nil {
					errs.add(err)
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns
}

// memPerSession is the growth of a server's memory per session between two snapshots.
type memPerSession struct {
	RSSBytes       float64 `json:"rssBytes"`
	HeapInuseBytes float64 `json:"heapInuseBytes"`
	StackBytes     float64 `json:"stackInuseBytes"`
	HeapStackBytes float64 `json:"heapPlusStackBytes"`
	Goroutines     float64 `json:"goroutines"`
}

// idleSummary is the result of --mode idle.
type idleSummary struct {
	Transport  string            `json:"transport"`
	Sessions   int               `json:"sessions"`
	Connected  int               `json:"connected"`
	Burst      int               `json:"burstPerSession"`
	GCForced   bool              `json:"gcForced"`
	Errors     map[string]uint64 `json:"errors"`
	Before     memSnapshot       `json:"before"`
	After      memSnapshot       `json:"after"`
	PerSession memPerSession     `json:"perSession"`
}

func delta(after, before uint64, n int) float64 {
	return (float64(after) - float64(before)) / float64(n)
}

// runIdle is --mode idle: measure the server, open --sessions
// authenticated sessions, optionally pass a burst of --burst echo requests
// per session, wait until the server counts them, measure again (after a
// forced GC when the server offers one) and report the growth per session.
func runIdle(ctx context.Context, o options, d *dialer, t target, stdout, stderr io.Writer) error {
	if t.probe.control == "" && t.probe.metrics == "" {
		return errNoProbe
	}
	// Sessions of an earlier run may still be closing on the server: wait
	// (up to 30 s) until it reports none before measuring the base.
	if t.probe.control != "" {
		deadline := time.Now().Add(30 * time.Second)
		for {
			s, err := t.probe.snapshot(ctx, false)
			if err != nil {
				return err
			}
			if s.Sessions == 0 || time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	before, err := t.probe.snapshot(ctx, true)
	if err != nil {
		return err
	}
	var errs errCounter
	conns := openSessions(ctx, o, d, o.sessions, &errs)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	if len(conns) == 0 {
		return fmt.Errorf("no session connected (%v)", errs.snapshot())
	}
	fmt.Fprintf(stderr, "connected %d/%d sessions over %s\n", len(conns), o.sessions, o.transport)
	if o.burst > 0 {
		if err := burst(ctx, o, conns); err != nil {
			return err
		}
	}
	// Wait for the server to count every session (the last ones may still
	// be registering), when it reports a count; with --parked, until it
	// reports every reader parked.
	var after memSnapshot
	wait := 30 * time.Second
	if o.parked {
		wait = 2 * time.Minute
	}
	deadline := time.Now().Add(wait)
	for {
		if after, err = t.probe.snapshot(ctx, true); err != nil {
			return err
		}
		counted := after.Sessions >= before.Sessions+len(conns)
		if o.parked && counted && after.Parked < before.Parked+len(conns) {
			counted = false
		}
		if t.probe.control == "" || counted {
			break
		}
		if time.Now().After(deadline) {
			if o.parked {
				return fmt.Errorf("idle: %d of %d sessions parked after %s", after.Parked-before.Parked, len(conns), wait)
			}
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	n := len(conns)
	s := idleSummary{
		Transport: o.transport, Sessions: o.sessions, Connected: n, Burst: o.burst, GCForced: after.GCForced,
		Errors: errs.snapshot(), Before: before, After: after,
		PerSession: memPerSession{
			RSSBytes:       delta(after.RSSBytes, before.RSSBytes, n),
			HeapInuseBytes: delta(after.HeapInuse, before.HeapInuse, n),
			StackBytes:     delta(after.StackInuse, before.StackInuse, n),
			HeapStackBytes: delta(after.HeapInuse+after.StackInuse, before.HeapInuse+before.StackInuse, n),
			Goroutines:     delta(uint64(after.Goroutines), uint64(before.Goroutines), n),
		},
	}
	return printJSONOr(stdout, o.jsonOut, s, func() {
		kib := func(b float64) float64 { return b / 1024 }
		p := s.PerSession
		fmt.Fprintf(stdout, "idle %s sessions: %d/%d authenticated, burst %d requests each, GC forced: %v\n",
			s.Transport, s.Connected, s.Sessions, s.Burst, s.GCForced)
		fmt.Fprintf(stdout, "per session  RSS %.2f KiB  heap %.2f KiB  stack %.2f KiB  heap+stack %.2f KiB  goroutines %.2f\n",
			kib(p.RSSBytes), kib(p.HeapInuseBytes), kib(p.StackBytes), kib(p.HeapStackBytes), p.Goroutines)
		fmt.Fprintf(stdout, "server       RSS %.1f -> %.1f MiB, goroutines %d -> %d, parked readers %d -> %d\n",
			float64(before.RSSBytes)/(1<<20), float64(after.RSSBytes)/(1<<20), before.Goroutines, after.Goroutines, before.Parked, after.Parked)
		printErrors(stdout, s.Errors)
	})
}

// burst sends o.burst pipelined echo requests of o.payload bytes on every
// session (a few sessions at a time) and reads every reply.
func burst(ctx context.Context, o options, conns []*rawConn) error {
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		firstErr atomic.Pointer[error]
	)
	payload := make([]byte, o.payload)
	for range min(len(conns), 16) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var frames []byte
			for {
				i := next.Add(1) - 1
				if i >= int64(len(conns)) {
					return
				}
				c := conns[i]
				frames = frames[:0]
				for k := range o.burst {
					frames, _ = protocol.AppendRequest(frames, "EchoRequest", uint16(k%65535+1), 0, payload)
				}
				bctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				c.setDeadline(bctx)
				err := c.send(frames)
				for k := 0; err == nil && k < o.burst; k++ {
					_, _, err = c.next()
				}
				c.setDeadline(context.Background())
				cancel()
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("burst: %w", *p)
	}
	return nil
}

// broadcastSummary is the result of --mode broadcast.
type broadcastSummary struct {
	Transport    string            `json:"transport"`
	Members      int               `json:"members"`
	PayloadBytes int               `json:"payloadBytes"`
	Broadcasts   int               `json:"broadcasts"`
	Seconds      float64           `json:"seconds"`
	Errors       map[string]uint64 `json:"errors"`
	// LatencyMs is from the send to the last member's receipt.
	LatencyMs map[string]float64 `json:"latencyMs"`
	// ServerCPUSeconds is the server's CPU time over the broadcasts (0: unknown).
	ServerCPUSeconds float64 `json:"serverCpuSeconds"`
	// ServerCPUMicrosPerBroadcast is server CPU per broadcast to every member.
	ServerCPUMicrosPerBroadcast float64 `json:"serverCpuMicrosPerBroadcast"`
}

// runBroadcast is --mode broadcast: --sessions members and one sender join
// one stage; the sender sends --broadcasts one-way packets of --payload
// bytes, one at a time, each once every member has received the previous
// one. The server relays each to every member (the relay app, or the
// raw-echo baseline's plain loop).
func runBroadcast(ctx context.Context, o options, d *dialer, t target, stdout, stderr io.Writer) error {
	var errs errCounter
	conns := openSessions(ctx, o, d, o.sessions+1, &errs)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	if len(conns) != o.sessions+1 {
		return fmt.Errorf("broadcast: %d of %d sessions connected (%v)", len(conns), o.sessions+1, errs.snapshot())
	}
	stage := int64(1_000_000 + os.Getpid())
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, c := range conns {
		if err := c.expectOK(jctx, "JoinStageRequest", stage, nil); err != nil {
			return fmt.Errorf("broadcast: join stage: %w", err)
		}
	}
	sender, members := conns[0], conns[1:]
	got := make(chan struct{}, len(members))
	var wg sync.WaitGroup
	for _, c := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				h, _, err := c.next()
				if err != nil {
					return // closed at the end of the run
				}
				if h.MsgSeq == 0 && string(h.MsgID) == broadcastMsgID {
					got <- struct{}{}
				}
			}
		}()
	}
	defer wg.Wait()
	defer func() {
		for _, c := range members {
			c.close()
		}
	}()
	frame, err := protocol.AppendRequest(nil, broadcastMsgID, 0, stage, make([]byte, o.payload))
	if err != nil {
		return err
	}
	var h histogram
	cpu := t.startCPU()
	start := time.Now()
	for range o.broadcasts {
		t0 := time.Now()
		if err := sender.send(frame); err != nil {
			return fmt.Errorf("broadcast: send: %w", err)
		}
		timeout := time.After(60 * time.Second)
		for range members {
			select {
			case <-got:
			case <-timeout:
				return errors.New("broadcast: members did not all receive a push within 60s")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		h.record(time.Since(t0))
	}
	elapsed := time.Since(start)
	cpuSec := cpu.seconds()
	s := broadcastSummary{
		Transport: o.transport, Members: len(members), PayloadBytes: o.payload, Broadcasts: o.broadcasts,
		Seconds: elapsed.Seconds(), Errors: errs.snapshot(), LatencyMs: quantilesMs(&h), ServerCPUSeconds: cpuSec,
		ServerCPUMicrosPerBroadcast: cpuSec * 1e6 / float64(o.broadcasts),
	}
	return printJSONOr(stdout, o.jsonOut, s, func() {
		fmt.Fprintf(stdout, "broadcast over %s: %d pushes of %d bytes to %d members each, %.1fs\n",
			s.Transport, s.Broadcasts, s.PayloadBytes, s.Members, s.Seconds)
		fmt.Fprintf(stdout, "server CPU %.2fs, %.0f µs per broadcast\n", s.ServerCPUSeconds, s.ServerCPUMicrosPerBroadcast)
		l := s.LatencyMs
		fmt.Fprintf(stdout, "to last member  p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms\n", l["p50"], l["p90"], l["p99"], l["max"])
		printErrors(stdout, s.Errors)
	})
}

// runEchoLight is --mode echo with --light: every session is a rawConn
// served by one goroutine that keeps --inflight requests in flight (MsgSeq
// 1..inflight, each reused once its reply is back) for --duration.
func runEchoLight(ctx context.Context, o options, d *dialer, t target, stdout, stderr io.Writer) error {
	var errs errCounter
	conns := openSessions(ctx, o, d, o.sessions, &errs)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	if len(conns) == 0 {
		return fmt.Errorf("no session connected (%v)", errs.snapshot())
	}
	fmt.Fprintf(stderr, "connected %d/%d sessions over %s; running %s\n", len(conns), o.sessions, o.transport, o.duration)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	payload := make([]byte, o.payload)
	var (
		mu sync.Mutex
		h  histogram
		wg sync.WaitGroup
	)
	cpu := t.startCPU()
	start := time.Now()
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local histogram
			defer func() {
				mu.Lock()
				h.merge(&local)
				mu.Unlock()
			}()
			// Closing the connection at the end of the run ends a blocked read.
			stop := context.AfterFunc(runCtx, c.close)
			defer stop()
			sent := make([]time.Time, o.inflight)
			var frames []byte
			for i := range o.inflight {
				frames, _ = protocol.AppendRequest(frames, "EchoRequest", uint16(i+1), 0, payload)
				sent[i] = time.Now()
			}
			if err := c.send(frames); err != nil {
				errs.add(err)
				return
			}
			for {
				hd, _, err := c.next()
				if err != nil {
					if runCtx.Err() == nil {
						errs.add(err)
					}
					return
				}
				if hd.MsgSeq == 0 || int(hd.MsgSeq) > o.inflight {
					continue
				}
				if hd.ErrorCode != 0 {
					errs.add(fmt.Errorf("EchoRequest answered ErrorCode %d", hd.ErrorCode))
				} else {
					local.record(time.Since(sent[hd.MsgSeq-1]))
				}
				if runCtx.Err() != nil {
					return
				}
				frames, _ = protocol.AppendRequest(frames[:0], "EchoRequest", hd.MsgSeq, 0, payload)
				sent[hd.MsgSeq-1] = time.Now()
				if err := c.send(frames); err != nil {
					if runCtx.Err() == nil {
						errs.add(err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpuSec := cpu.seconds()
	s := summary{
		Transport: o.transport, Sessions: o.sessions, Connected: len(conns), Inflight: o.inflight,
		PayloadSize: o.payload, Seconds: elapsed.Seconds(), Requests: h.n, Errors: errs.snapshot(),
		PerSecond: float64(h.n) / elapsed.Seconds(), LatencyMs: quantilesMs(&h),
		ServerCPUSeconds: cpuSec, PerServerCPUSecond: perCPU(float64(h.n), cpuSec),
	}
	return printEcho(stdout, o.jsonOut, s)
}
