package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/playhouse-k8s/playhouse/internal/rawecho"
	"github.com/playhouse-k8s/playhouse/internal/testcert"
	"github.com/playhouse-k8s/playhouse/pkg/apps"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Serve modes (--serve).
const (
	serveRaw       = "raw"
	servePlayhouse = "playhouse"
)

// benchMaxConnections is the connection cap of a --serve playhouse server
// started without --config: above the largest idle-memory run (18,000), below
// the 20,000 open files a process may hold.
const benchMaxConnections = 19500

// benchHeartbeatTimeout keeps idle-memory sessions (which send nothing) open
// for the whole run in a --serve playhouse server started without --config.
const benchHeartbeatTimeout = time.Hour

// memSnapshot is what the control endpoint reports about its process.
type memSnapshot struct {
	PID        int    `json:"pid"`
	GCForced   bool   `json:"gcForced"`
	RSSBytes   uint64 `json:"rssBytes"`
	HeapInuse  uint64 `json:"heapInuseBytes"`
	HeapAlloc  uint64 `json:"heapAllocBytes"`
	StackInuse uint64 `json:"stackInuseBytes"`
	Sys        uint64 `json:"sysBytes"`
	Goroutines int    `json:"goroutines"`
	// Sessions is the server's open connection or session count.
	Sessions int `json:"sessions"`
	// Parked is how many of the sessions have a parked reader (the engine's
	// limits.idlePark; always 0 for the baseline).
	Parked int `json:"parked"`
}

// counts reports a served process's open sessions and parked readers.
type counts struct{ sessions, parked func() int }

// takeSnapshot reads this process's memory figures; with gc it first runs a
// collection and returns freed pages to the OS, so RSS shows what is live.
func takeSnapshot(gc bool, n counts) memSnapshot {
	if gc {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := procRSS(os.Getpid())
	return memSnapshot{
		PID: os.Getpid(), GCForced: gc, RSSBytes: rss, HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc,
		StackInuse: ms.StackInuse, Sys: ms.Sys, Goroutines: runtime.NumGoroutine(), Sessions: n.sessions(), Parked: n.parked(),
	}
}

// controlHandler serves GET /snapshot[?gc=1] (JSON memSnapshot) and
// /metrics (the Go runtime and process collectors).
func controlHandler(n counts) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /snapshot", func(w http.ResponseWriter, r *http.Request) {
		gc, _ := strconv.ParseBool(r.URL.Query().Get("gc"))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(takeSnapshot(gc, n))
	})
	return mux
}

// runServe runs a server until ctx ends: the raw-echo baseline
// (internal/rawecho) or the PlayHouse engine (pkg/server, exactly what
// playhouse-server runs), plus the bench control endpoint on --control-addr.
// TLS-TCP (--tls-addr) and WSS (--wss-addr) use a throwaway certificate
// whose CA file is named in the output (pass it to the load as --ca).
// It prints one line "serving <kind> tcp=<addr> ws=<addr> tls=<addr>
// wss=<addr> ca=<file> control=<addr> admin=<addr> pid=<pid>" on stdout once
// every listener is bound (a transport not served is empty; admin is the
// engine's admin endpoint with /metrics, or "none" for the baseline).
func runServe(ctx context.Context, o options, stdout, stderr io.Writer) error {
	var (
		tcpAddr, wsAddr, tlsAddr, wssAddr string
		admin                             = "none"
		caFile                            string
		certs                             *testcert.Bundle
		n                                 counts
		stop                              func()
	)
	if o.tlsAddr != "" || o.wssAddr != "" {
		dir, err := os.MkdirTemp("", "playhouse-bench-tls-")
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer os.RemoveAll(dir)
		if certs, err = testcert.Write(dir, 24*time.Hour); err != nil {
			return fmt.Errorf("serve: throwaway certificate: %w", err)
		}
		caFile = certs.CAFile
	}
	switch o.serve {
	case serveRaw:
		rs := rawecho.New(0)
		var (
			lns []net.Listener
			hss []*http.Server
		)
		stop = func() {
			for _, hs := range hss {
				_ = hs.Close()
			}
			rs.Close()
			for _, ln := range lns {
				_ = ln.Close()
			}
		}
		listen := func(addr string, secure bool) (net.Listener, error) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("serve raw: %w", err)
			}
			lns = append(lns, ln)
			if secure {
				cfg, err := certs.ServerConfig()
				if err != nil {
					return nil, fmt.Errorf("serve raw: %w", err)
				}
				ln = tls.NewListener(ln, cfg)
			}
			return ln, nil
		}
		serveWS := func(addr string, secure bool) (string, error) {
			ln, err := listen(addr, secure)
			if err != nil {
				return "", err
			}
			mux := http.NewServeMux()
			mux.Handle(o.wsPath, rs.WebSocketHandler())
			hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			hss = append(hss, hs)
			go func(ln net.Listener) { _ = hs.Serve(ln) }(ln)
			return ln.Addr().String(), nil
		}
		err := func() error {
			ln, err := listen(o.addr, false)
			if err != nil {
				return err
			}
			go serveTCP(rs, ln)
			tcpAddr = ln.Addr().String()
			if o.tlsAddr != "" {
				if ln, err = listen(o.tlsAddr, true); err != nil {
					return err
				}
				go serveTCP(rs, ln)
				tlsAddr = ln.Addr().String()
			}
			if o.wsAddr != "" {
				if wsAddr, err = serveWS(o.wsAddr, false); err != nil {
					return err
				}
			}
			if o.wssAddr != "" {
				if wssAddr, err = serveWS(o.wssAddr, true); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			stop()
			return err
		}
		n = counts{sessions: rs.Count, parked: func() int { return 0 }}
	case servePlayhouse:
		cfg, err := o.serverConfig(certs)
		if err != nil {
			return err
		}
		srv, err := serverconfig.NewApp(cfg, apps.Builtin(), slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			return fmt.Errorf("serve playhouse: %w", err)
		}
		if err := srv.Start(ctx); err != nil {
			return fmt.Errorf("serve playhouse: %w", err)
		}
		tcpAddr = addrString(srv.Addr(transport.KindTCP))
		wsAddr = addrString(srv.Addr(transport.KindWebSocket))
		tlsAddr = addrString(srv.Addr(transport.KindTLSTCP))
		wssAddr = addrString(srv.Addr(transport.KindWSS))
		admin = addrString(srv.AdminAddr())
		mgr := srv.Manager()
		n = counts{sessions: mgr.Count, parked: func() int { return mgr.Stats().Parked }}
		stop = func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}
	default:
		return fmt.Errorf("--serve must be %s or %s, got %q", serveRaw, servePlayhouse, o.serve)
	}
	defer stop()
	ctlLn, err := net.Listen("tcp", o.controlAddr)
	if err != nil {
		return fmt.Errorf("serve: control endpoint: %w", err)
	}
	ctl := &http.Server{Handler: controlHandler(n), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ctl.Serve(ctlLn) }()
	defer ctl.Close()
	fmt.Fprintf(stdout, "serving %s tcp=%s ws=%s tls=%s wss=%s ca=%s control=%s admin=%s pid=%d\n",
		o.serve, tcpAddr, wsAddr, tlsAddr, wssAddr, caFile, ctlLn.Addr(), admin, os.Getpid())
	<-ctx.Done()
	return nil
}

// serverConfig is the engine configuration of --serve playhouse: the
// --config file, or (without one) the defaults with what a benchmark needs
// (no per-session rate limit, benchMaxConnections, benchHeartbeatTimeout,
// warn-level logs); then --addr, --ws-addr, --app and --idle-park override.
func (o options) serverConfig(certs *testcert.Bundle) (config.Config, error) {
	c := config.Default()
	if o.configFile != "" {
		var err error
		if c, err = config.Load(o.configFile); err != nil {
			return c, fmt.Errorf("serve playhouse: %w", err)
		}
	} else {
		c.Limits.RateLimit.PacketsPerSecond = 0
		c.Limits.MaxConnections = benchMaxConnections
		c.Limits.HeartbeatTimeout = config.D(benchHeartbeatTimeout)
		c.Log.Level = "warn"
		c.Admin.Address = "127.0.0.1:0"
	}
	c.Transports.TCP.Enabled, c.Transports.TCP.Address = true, o.addr
	if o.wsAddr != "" {
		c.Transports.WebSocket.Enabled, c.Transports.WebSocket.Address = true, o.wsAddr
		c.Transports.WebSocket.Path = o.wsPath
	} else {
		c.Transports.WebSocket.Enabled = false
	}
	if o.tlsAddr != "" {
		c.Transports.TLSTCP.Enabled, c.Transports.TLSTCP.Address = true, o.tlsAddr
	}
	if o.wssAddr != "" {
		c.Transports.WSS.Enabled, c.Transports.WSS.Address = true, o.wssAddr
		c.Transports.WSS.Path = o.wsPath
	}
	if certs != nil {
		c.Transports.TLS.CertFile, c.Transports.TLS.KeyFile = certs.CertFile, certs.KeyFile
	}
	if o.app != "" {
		c.App = o.app
	}
	if o.idlePark >= 0 {
		c.Limits.IdlePark = config.D(o.idlePark)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("serve playhouse: %w", err)
	}
	return c, nil
}

// errNoProbe is returned when a mode needs the server's memory figures and
// neither --control nor --metrics says where to read them.
var errNoProbe = errors.New("idle mode needs --control (a --serve process) or --metrics (a /metrics URL)")

// addrString is a's address, or "" for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// serveTCP serves ln until the server closes (its error then is nil or a
// closed listener's, which the benchmark does not need).
func serveTCP(rs *rawecho.Server, ln net.Listener) { _ = rs.ServeTCP(ln) }
