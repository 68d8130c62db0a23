// Command gameserver is a small game server written in Go that embeds the
// PlayHouse session engine beside its own HTTP API, the way a game team
// replaces the official PlayHouse test server:
//
//   - one HTTP port serves the API (GET /api/health, GET /api/stages), the
//     WebSocket endpoint /ws and the engine's admin endpoints under /admin/;
//   - one HTTPS port serves WSS at /ws with a self-signed certificate made
//     in memory at start (a tls.Config: no files, no reload);
//   - its own session.Handler runs rooms: JoinRoomRequest puts the session
//     in the room named by the packet's StageId and tells the other members
//     (PlayerJoined push); ChatRequest is answered (ChatReply) and its text
//     pushed to the room's other members (ChatNotice).
//
// The engine binds no listener of its own (server.Options has none) and
// links neither Kubernetes nor YAML.
//
//	go run ./examples/gameserver -http 127.0.0.1:8080 -https 127.0.0.1:8443
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Message names of the rooms application.
const (
	JoinRoomMsgID     = "JoinRoomRequest" // request; StageId names the room
	ChatMsgID         = "ChatRequest"     // request; payload is the text
	PlayerJoinedMsgID = "PlayerJoined"    // push to the others: the account that joined
	ChatNoticeMsgID   = "ChatNotice"      // push to the others: "account: text"
)

// httpTimeout bounds reading a request head and writing an answer on the
// game's own HTTP servers.
const httpTimeout = 10 * time.Second

// rooms is the game's session.Handler.
type rooms struct{}

// OnConnect accepts every connection.
func (rooms) OnConnect(*session.Session) error { return nil }

// Authenticate accepts any non-empty name as the account.
func (rooms) Authenticate(_ *session.Session, p *session.Packet) session.AuthResult {
	if len(p.Payload) == 0 || len(p.Payload) > 64 {
		return session.AuthResult{ErrorCode: protocol.AuthenticationFailed}
	}
	return session.AuthResult{AccountID: string(p.Payload), ReplyPayload: p.Payload}
}

// OnPacket runs the room commands.
func (rooms) OnPacket(s *session.Session, p *session.Packet) {
	switch {
	case p.MsgID == JoinRoomMsgID && p.IsRequest():
		if p.StageID <= 0 {
			_ = s.Reply(p, protocol.JoinStageFailed, nil)
			return
		}
		s.SetStageID(p.StageID)
		members := len(s.Manager().StageMembers(p.StageID))
		_ = s.Reply(p, protocol.Success, []byte(fmt.Sprint(members)))
		_, _ = s.Manager().Broadcast(p.StageID, PlayerJoinedMsgID, []byte(s.AccountID()), s)
	case p.MsgID == ChatMsgID && p.IsRequest():
		room := s.StageID()
		if room == 0 {
			_ = s.Reply(p, protocol.JoinStageFailed, nil)
			return
		}
		_ = s.Reply(p, protocol.Success, nil)
		_, _ = s.Manager().Broadcast(room, ChatNoticeMsgID, fmt.Appendf(nil, "%s: %s", s.AccountID(), p.Payload), s)
	case p.IsRequest():
		_ = s.Reply(p, protocol.InvalidMessage, nil)
	}
}

// OnDisconnect needs no bookkeeping: the manager takes the session out of
// its room.
func (rooms) OnDisconnect(*session.Session, session.CloseReason) {}

// Stage is one room in GET /api/stages.
type Stage struct {
	// ID is the room's StageId.
	ID int64 `json:"id"`
	// Members is the number of sessions in the room.
	Members int `json:"members"`
}

// stages lists the rooms that have members, by id.
func stages(m *session.Manager) []Stage {
	count := map[int64]int{}
	m.Range(func(s *session.Session) bool {
		if id := s.StageID(); id != 0 {
			count[id]++
		}
		return true
	})
	out := make([]Stage, 0, len(count))
	for id, n := range count {
		out = append(out, Stage{ID: id, Members: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// selfSigned makes a certificate for localhost and 127.0.0.1 in memory.
func selfSigned() (tls.Certificate, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gameserver example"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf, nil
}

// gameServer is the running program.
type gameServer struct {
	engine    *server.Server
	http      *http.Server
	https     *http.Server
	httpAddr  net.Addr
	httpsAddr net.Addr
	cert      *x509.Certificate // the self-signed certificate of the HTTPS port
	errs      chan error        // serve errors of the two HTTP servers
}

// start builds the engine and binds both ports (port 0 picks a free one).
func start(ctx context.Context, httpAddr, httpsAddr string, log *slog.Logger) (*gameServer, error) {
	cert, leaf, err := selfSigned()
	if err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	engine, err := server.New(server.Options{
		Session: session.Options{Handler: rooms{}},
		Logger:  log,
		// No engine listener and no admin listener: everything is mounted
		// on the game's own servers below.
	})
	if err != nil {
		return nil, err
	}
	if err := engine.Start(ctx); err != nil {
		return nil, err
	}
	ws, err := engine.WebSocketHandler(transport.KindWebSocket, nil)
	if err != nil {
		return nil, err
	}
	wss, err := engine.WebSocketHandler(transport.KindWSS, nil)
	if err != nil {
		return nil, err
	}

	api := http.NewServeMux()
	api.HandleFunc("GET /api/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"status": "ok", "sessions": engine.Manager().Count()})
	})
	api.HandleFunc("GET /api/stages", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, stages(engine.Manager()))
	})
	api.Handle("/ws", ws)
	api.Handle("/admin/", http.StripPrefix("/admin", engine.AdminHandler()))
	secure := http.NewServeMux()
	secure.Handle("/ws", wss)

	g := &gameServer{engine: engine, cert: leaf, errs: make(chan error, 2)}
	g.http = &http.Server{Handler: api, ReadHeaderTimeout: httpTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	g.https = &http.Server{Handler: secure, TLSConfig: tlsConfig, ReadHeaderTimeout: httpTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		_ = engine.Shutdown(ctx)
		return nil, fmt.Errorf("listen http: %w", err)
	}
	sl, err := net.Listen("tcp", httpsAddr)
	if err != nil {
		hl.Close()
		_ = engine.Shutdown(ctx)
		return nil, fmt.Errorf("listen https: %w", err)
	}
	g.httpAddr, g.httpsAddr = hl.Addr(), sl.Addr()
	go func() { g.errs <- g.http.Serve(hl) }()
	go func() { g.errs <- g.https.ServeTLS(sl, "", "") }()
	log.Info("gameserver listening", "http", hl.Addr().String(), "https", sl.Addr().String())
	return g, nil
}

// stop drains the sessions (each gets the engine's drain notice), then
// closes the HTTP servers.
func (g *gameServer) stop(ctx context.Context) error {
	err := g.engine.Drain(ctx)
	err = errors.Join(err, g.http.Shutdown(ctx), g.https.Shutdown(ctx))
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gameserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP address: /api/health, /api/stages, /ws, /admin/")
	httpsAddr := fs.String("https", "127.0.0.1:8443", "HTTPS address: WSS at /ws (self-signed certificate)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, err := start(ctx, *httpAddr, *httpsAddr, log)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-g.errs:
		log.Error("http server stopped", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), server.DefaultDrainTimeout+5*time.Second)
	defer cancel()
	return g.stop(sctx)
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "gameserver:", err)
		os.Exit(1)
	}
}
