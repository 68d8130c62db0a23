package controllers

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// statusPod is a ready pod whose admin port is the test server's.
func statusPod(t *testing.T, srv *httptest.Server) *corev1.Pod {
	t.Helper()
	host, port, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  ContainerName,
			Ports: []corev1.ContainerPort{{Name: "tcp", ContainerPort: 7777}, {Name: PortAdmin, ContainerPort: int32(p)}},
		}}},
		Status: corev1.PodStatus{PodIP: host},
	}
}

func TestHTTPSessionReader(t *testing.T) {
	var body atomic.Value
	var code atomic.Int32
	var path atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.URL.Path)
		w.WriteHeader(int(code.Load()))
		_, _ = w.Write([]byte(body.Load().(string)))
	}))
	defer srv.Close()
	pod := statusPod(t, srv)
	r := NewHTTPSessionReader(time.Second)
	ctx := context.Background()

	for _, tc := range []struct {
		name    string
		code    int
		body    string
		want    int64
		wantErr string
	}{
		{"ok", 200, `{"sessions": 17, "draining": false, "uptime": "1h"}`, 17, ""},
		{"zero", 200, `{"sessions": 0, "draining": true}`, 0, ""},
		{"server error", 503, `draining`, 0, "503"},
		{"no field", 200, `{"draining": false}`, 0, "no \"sessions\""},
		{"not json", 200, `<html>`, 0, "decode"},
		{"negative", 200, `{"sessions": -1}`, 0, "-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code.Store(int32(tc.code))
			body.Store(tc.body)
			got, err := r.Sessions(ctx, pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
			if path.Load() != "/status" {
				t.Errorf("requested %v, want /status", path.Load())
			}
		})
	}
}

func TestHTTPSessionReaderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	r := &HTTPSessionReader{Timeout: 50 * time.Millisecond} // zero Client: built per request
	start := time.Now()
	if _, err := r.Sessions(context.Background(), statusPod(t, srv)); err == nil {
		t.Fatal("a hanging pod did not time out")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout took %s", d)
	}
	if _, err := r.Sessions(context.Background(), &corev1.Pod{}); err == nil {
		t.Error("a pod without an IP was read")
	}
}

func TestAdminPortDefault(t *testing.T) {
	if got := adminPort(&corev1.Pod{}); got != 9090 {
		t.Errorf("admin port %d, want 9090", got)
	}
}

func TestDeletionCost(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 5: "5", -3: "0", 1 << 40: "2147483647"} {
		if got := deletionCost(in); got != want {
			t.Errorf("deletionCost(%d) = %s, want %s", in, got, want)
		}
	}
}

func TestPodReady(t *testing.T) {
	ready := corev1.PodStatus{PodIP: "10.0.0.2", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	now := metav1.Now()
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"ready", corev1.Pod{Status: ready}, true},
		{"no ip", corev1.Pod{Status: corev1.PodStatus{Conditions: ready.Conditions}}, false},
		{"not ready", corev1.Pod{Status: corev1.PodStatus{PodIP: "10.0.0.2", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}}}, false},
		{"no condition", corev1.Pod{Status: corev1.PodStatus{PodIP: "10.0.0.2"}}, false},
		{"terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: ready}, false},
	} {
		if got := podReady(&tc.pod); got != tc.want {
			t.Errorf("%s: podReady = %v, want %v", tc.name, got, tc.want)
		}
	}
}
