// Command playhouse-server runs the PlayHouse session engine with a built-in
// application. Without flags it listens on loopback (TCP 127.0.0.1:7777,
// WebSocket 127.0.0.1:7778/ws, admin 127.0.0.1:9090) with the echo app.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/playhouse-k8s/playhouse/pkg/apps"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "playhouse-server:", err)
		os.Exit(1)
	}
}

// flags are the command-line overrides of the config file.
type flags struct {
	configFile                              string
	tcpAddr, wsAddr, tlsTCPAddr, wssAddr    string
	tlsCert, tlsKey, adminAddr, app, logFmt string
	logLevel                                string
}

func parseFlags(args []string, stderr io.Writer) (flags, *flag.FlagSet, error) {
	var f flags
	fs := flag.NewFlagSet("playhouse-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.configFile, "config", "", "YAML config file (default: embedded defaults)")
	fs.StringVar(&f.tcpAddr, "tcp-addr", "", "TCP listen address; enables TCP (e.g. 127.0.0.1:7777)")
	fs.StringVar(&f.wsAddr, "ws-addr", "", "WebSocket listen address; enables WebSocket")
	fs.StringVar(&f.tlsTCPAddr, "tls-tcp-addr", "", "TLS-over-TCP listen address; enables it (needs --tls-cert/--tls-key)")
	fs.StringVar(&f.wssAddr, "wss-addr", "", "WSS listen address; enables it (needs --tls-cert/--tls-key)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate chain for TLS transports")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key for TLS transports")
	fs.StringVar(&f.adminAddr, "admin-addr", "", "admin HTTP address (/healthz, /readyz, /status, /metrics)")
	fs.StringVar(&f.app, "app", "", "built-in application: "+strings.Join(apps.Builtin().Names(), " or "))
	fs.StringVar(&f.logFmt, "log-format", "", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "", "log level: debug, info, warn or error")
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return f, fs, err
}

// loadConfig reads the config file (or the defaults) and applies the flags
// that were given: flags override the file.
func loadConfig(f flags) (config.Config, error) {
	c := config.Default()
	if f.configFile != "" {
		var err error
		if c, err = config.Load(f.configFile); err != nil {
			return config.Config{}, err
		}
	}
	t := &c.Transports
	set := func(l *config.Listener, addr string) {
		if addr != "" {
			l.Enabled, l.Address = true, addr
		}
	}
	set(&t.TCP, f.tcpAddr)
	set(&t.WebSocket.Listener, f.wsAddr)
	set(&t.TLSTCP, f.tlsTCPAddr)
	set(&t.WSS.Listener, f.wssAddr)
	if f.tlsCert != "" {
		t.TLS.CertFile = f.tlsCert
	}
	if f.tlsKey != "" {
		t.TLS.KeyFile = f.tlsKey
	}
	if f.adminAddr != "" {
		c.Admin.Address = f.adminAddr
	}
	if f.app != "" {
		c.App = f.app
	}
	if f.logFmt != "" {
		c.Log.Format = f.logFmt
	}
	if f.logLevel != "" {
		c.Log.Level = f.logLevel
	}
	if err := c.Validate(); err != nil {
		return config.Config{}, err
	}
	if t := c.Transports; !t.TCP.Enabled && !t.WebSocket.Enabled && !t.TLSTCP.Enabled && !t.WSS.Enabled {
		// transports.mounted is for programs that serve WebSocket through
		// their own HTTP server; playhouse-server has none.
		return config.Config{}, errors.New("invalid config: transports: no transport is enabled (playhouse-server mounts no handler, so transports.mounted alone serves nothing)")
	}
	if reg := apps.Builtin(); reg[c.App] == nil {
		return config.Config{}, fmt.Errorf("invalid config: app: must be a built-in application (%s), got %q", strings.Join(reg.Names(), ", "), c.App)
	}
	return c, nil
}

// newLogger builds the structured logger the config asks for.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	f, _, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg, err := loadConfig(f)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	// The built-in applications; a program embedding the engine registers
	// its own or passes its handler to serverconfig.New.
	srv, err := serverconfig.NewApp(cfg, apps.Builtin(), log)
	if err != nil {
		return err
	}
	// The first SIGTERM/SIGINT starts the drain; a second one ends it (the
	// sessions still open are closed at once); a third exits immediately.
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		sig := <-sigs
		log.Info("signal received; draining", "signal", sig.String())
		cancel()
		sig = <-sigs
		log.Warn("second signal; ending the drain now", "signal", sig.String())
		srv.Abort()
		sig = <-sigs
		log.Error("third signal; exiting", "signal", sig.String())
		os.Exit(1)
	}()
	log.Info("playhouse-server starting", "app", cfg.App)
	if err := srv.Run(ctx); err != nil {
		return err
	}
	log.Info("playhouse-server stopped")
	return nil
}
