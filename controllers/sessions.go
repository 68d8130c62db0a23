package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/playhouse-k8s/playhouse/pkg/config"
)

// SessionReader reads the live session count of one server pod.
type SessionReader interface {
	// Sessions returns the number of sessions the pod holds right now.
	Sessions(ctx context.Context, pod *corev1.Pod) (int64, error)
}

// HTTPSessionReader reads a pod's session count from the server's admin
// endpoint, GET http://<podIP>:<admin port>/status.
type HTTPSessionReader struct {
	// Client sends the requests; nil builds a client like
	// NewHTTPSessionReader's for each request.
	Client *http.Client
	// Timeout bounds one request; zero means DefaultSessionReadTimeout.
	Timeout time.Duration
}

// statusBody is the part of the server's /status response the operator reads.
type statusBody struct {
	Sessions *int64 `json:"sessions"`
	Draining bool   `json:"draining"`
}

// NewHTTPSessionReader returns an HTTPSessionReader with its own HTTP client:
// no keep-alives (each pod is asked once per resync) and no proxy (pod IPs
// are reached directly).
func NewHTTPSessionReader(timeout time.Duration) *HTTPSessionReader {
	return &HTTPSessionReader{Client: newStatusClient(), Timeout: timeout}
}

// newStatusClient builds the HTTP client of the /status requests.
func newStatusClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: DefaultSessionReadTimeout}).DialContext,
	}}
}

// Sessions implements SessionReader.
func (h *HTTPSessionReader) Sessions(ctx context.Context, pod *corev1.Pod) (int64, error) {
	if pod.Status.PodIP == "" {
		return 0, fmt.Errorf("pod %s has no IP yet", pod.Name)
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultSessionReadTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(adminPort(pod)))) + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("build status request for pod %s: %w", pod.Name, err)
	}
	c := h.Client
	if c == nil {
		c = newStatusClient()
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read status of pod %s: %w", pod.Name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("read status of pod %s: %s returned %s", pod.Name, url, resp.Status)
	}
	var body statusBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return 0, fmt.Errorf("decode status of pod %s: %w", pod.Name, err)
	}
	if body.Sessions == nil {
		return 0, fmt.Errorf("status of pod %s has no \"sessions\" field", pod.Name)
	}
	if *body.Sessions < 0 {
		return 0, fmt.Errorf("status of pod %s reports %d sessions", pod.Name, *body.Sessions)
	}
	return *body.Sessions, nil
}

// adminPort is the pod's container port named "admin", or the default.
func adminPort(pod *corev1.Pod) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == PortAdmin {
				return p.ContainerPort
			}
		}
	}
	return config.DefaultAdminPort
}

// podReady reports whether a pod is running, not terminating, has an IP and
// its Ready condition is True: only such pods serve sessions worth reading.
func podReady(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// deletionCost is the pod-deletion-cost annotation value of a session count,
// clamped to the int32 range the ReplicaSet controller accepts.
func deletionCost(sessions int64) string {
	const maxCost = 1<<31 - 1
	return strconv.FormatInt(min(max(sessions, 0), maxCost), 10)
}

// sessionCount is the result of reading one pod.
type sessionCount struct {
	pod      *corev1.Pod
	sessions int64
	err      error
}

// maxParallelReads bounds the concurrent /status requests of one reconcile.
const maxParallelReads = 8

// readSessions reads every pod's session count, at most maxParallelReads at a
// time. The results keep the order of pods.
func readSessions(ctx context.Context, reader SessionReader, pods []*corev1.Pod) []sessionCount {
	out := make([]sessionCount, len(pods))
	sem := make(chan struct{}, maxParallelReads)
	var wg sync.WaitGroup
	for i, pod := range pods {
		out[i].pod = pod
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := reader.Sessions(ctx, pod)
			if err == nil && n < 0 {
				err = errors.New("negative session count")
			}
			out[i].sessions, out[i].err = n, err
		}()
	}
	wg.Wait()
	return out
}
