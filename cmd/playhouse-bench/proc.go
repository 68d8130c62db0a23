package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// procCPUSeconds returns the user+system CPU time a process has used, from
// /proc/<pid>/stat (10 ms resolution).
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("server CPU time: unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("server CPU time: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	return float64(ut+st) / userHZ, nil
}

// procRSS returns a process's resident set size from /proc/<pid>/status.
func procRSS(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("server RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("server RSS: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("server RSS: no VmRSS in /proc/%d/status", pid)
}

// raiseOpenFiles raises this process's soft open-file limit to the hard
// limit (each session holds one descriptor).
func raiseOpenFiles() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("open-file limit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("raise open-file limit: %w", err)
		}
	}
	return l.Cur, nil
}

// probe reads a server's memory figures: from a bench control endpoint
// (--control: forced GC, exact runtime figures), or from a Prometheus
// /metrics URL (--metrics: no forced GC), with RSS from /proc when the
// server's pid is known.
type probe struct {
	control string // base URL of a --serve process's control endpoint
	metrics string // URL of a /metrics page
	pid     int
	http    *http.Client
}

func newProbe(control, metrics string, pid int) *probe {
	return &probe{control: strings.TrimSuffix(control, "/"), metrics: metrics, pid: pid, http: &http.Client{Timeout: 60 * time.Second}}
}

func (p *probe) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, err
}

// serverPID asks the control endpoint for the server's pid (0 without one).
func (p *probe) serverPID(ctx context.Context) (int, error) {
	if p.control == "" {
		return p.pid, nil
	}
	s, err := p.snapshot(ctx, false)
	return s.PID, err
}

// snapshot returns the server's memory figures, after a forced GC when gc
// is set and the server offers one (a control endpoint).
func (p *probe) snapshot(ctx context.Context, gc bool) (memSnapshot, error) {
	var s memSnapshot
	switch {
	case p.control != "":
		b, err := p.get(ctx, p.control+"/snapshot?gc="+strconv.FormatBool(gc))
		if err != nil {
			return s, fmt.Errorf("control snapshot: %w", err)
		}
		if err := json.Unmarshal(b, &s); err != nil {
			return s, fmt.Errorf("control snapshot: %w", err)
		}
		return s, nil
	case p.metrics != "":
		b, err := p.get(ctx, p.metrics)
		if err != nil {
			return s, fmt.Errorf("metrics: %w", err)
		}
		m := parseMetrics(b)
		s.HeapInuse = uint64(m["go_memstats_heap_inuse_bytes"])
		s.HeapAlloc = uint64(m["go_memstats_heap_alloc_bytes"])
		s.StackInuse = uint64(m["go_memstats_stack_inuse_bytes"])
		s.Sys = uint64(m["go_memstats_sys_bytes"])
		s.RSSBytes = uint64(m["process_resident_memory_bytes"])
		s.Goroutines = int(m["go_goroutines"])
		s.PID = p.pid
		if p.pid > 0 {
			if rss, err := procRSS(p.pid); err == nil {
				s.RSSBytes = rss
			}
		}
		return s, nil
	}
	return s, errNoProbe
}

// parseMetrics reads the unlabelled samples of a Prometheus text page
// (the go_* and process_* gauges the probe needs), summing repeats.
func parseMetrics(b []byte) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] += v
		}
	}
	return out
}

// spawned is a server started with --spawn.
type spawned struct {
	cmd  *exec.Cmd
	done chan error
}

// spawn starts command (split on spaces; e.g. "taskset -c 0 playhouse-bench
// --serve raw ...") and waits until addr accepts TCP connections.
func spawn(ctx context.Context, command, addr string, stderr io.Writer) (*spawned, error) {
	args := strings.Fields(command)
	if len(args) == 0 {
		return nil, errors.New("--spawn: empty command")
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("--spawn %q: %w", command, err)
	}
	s := &spawned{cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return s, nil
		}
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("--spawn %q exited before %s accepted connections: %v", command, addr, err)
		case <-ctx.Done():
			s.stop()
			return nil, fmt.Errorf("--spawn: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("--spawn %q: %s accepted no connection within 30s", command, addr)
		}
	}
}

// stop sends SIGTERM, waits up to 15 s, then kills.
func (s *spawned) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
