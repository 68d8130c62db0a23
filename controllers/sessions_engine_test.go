package controllers

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/playhouse-k8s/playhouse/pkg/apps"
	"github.com/playhouse-k8s/playhouse/pkg/client"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// TestHTTPSessionReaderAgainstTheEngine runs the real session engine with one
// live session and reads its /status through HTTPSessionReader, the way the
// reconciler does for a pod: the reader's URL, JSON fields and counting must
// match what playhouse-server actually serves, not only a stub.
func TestHTTPSessionReaderAgainstTheEngine(t *testing.T) {
	cfg := config.Default()
	cfg.Transports.TCP.Port = 0
	cfg.Transports.WebSocket.Port = 0
	cfg.Admin.Port = 0
	srv, err := serverconfig.NewApp(cfg, apps.Builtin(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("start the engine: %v", err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), waitTimeout)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})

	// The pod as the reconciler sees it: ready, at the engine's address, with
	// the engine's admin port as its container port named "admin".
	admin, ok := srv.AdminAddr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("admin address %v is not TCP", srv.AdminAddr())
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "engine-0"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: ContainerName,
			Ports: []corev1.ContainerPort{
				{Name: PortTCP, ContainerPort: int32(srv.Addr(transport.KindTCP).(*net.TCPAddr).Port)},
				{Name: PortAdmin, ContainerPort: int32(admin.Port)},
			},
		}}},
		Status: corev1.PodStatus{
			PodIP:      admin.IP.String(),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	if !podReady(pod) {
		t.Fatal("the test pod is not ready for the reconciler")
	}
	reader := NewHTTPSessionReader(DefaultSessionReadTimeout)
	sessionsAre := func(want int64) func() (bool, error) {
		return func() (bool, error) {
			n, err := reader.Sessions(ctx, pod)
			return n == want, err
		}
	}
	waitFor(t, "the idle engine to report 0 sessions", sessionsAre(0))

	c, err := client.Dial(ctx, srv.Addr(transport.KindTCP).String(), client.Options{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Authenticate(ctx, "AuthenticateRequest", []byte("x")); err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	waitFor(t, "the engine to report the live session", sessionsAre(1))
	n, err := reader.Sessions(ctx, pod)
	if err != nil || n != 1 {
		t.Fatalf("Sessions = %d, %v; want 1", n, err)
	}
	// What the reconciler does with it.
	got := readSessions(ctx, reader, []*corev1.Pod{pod})
	if got[0].err != nil || got[0].sessions != 1 || deletionCost(got[0].sessions) != "1" {
		t.Errorf("readSessions = %+v", got[0])
	}

	// The session ends: the count follows.
	if err := c.Close(); err != nil {
		t.Fatalf("close the client: %v", err)
	}
	waitFor(t, "the engine to report the session gone", sessionsAre(0))
}
