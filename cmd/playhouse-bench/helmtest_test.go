package main

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/playhouse-k8s/playhouse/internal/charttest"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// TestHelmTestPodArgs runs this binary with exactly the arguments the
// chart's `helm test` Pod renders, with only the fleet's Service address
// swapped for a loopback echo server, so the chart and the flags cannot drift
// apart.
func TestHelmTestPodArgs(t *testing.T) {
	srv, _ := startEcho(t, 0)
	for _, tc := range []struct {
		set  []string
		kind transport.Kind
	}{
		{nil, transport.KindTCP},
		{[]string{"--set", "test.transport=ws"}, transport.KindWebSocket},
		{[]string{"--set", "test.transport=wss", "--set", "test.port=443", "--set", "test.credentials=player-1"}, transport.KindWSS},
	} {
		objs := charttest.Render(t, "ph", "games", tc.set...)
		u := charttest.Find(objs, "Pod", "games", "ph-playhouse-test-echo")
		if u == nil {
			t.Fatalf("%v: no helm test Pod rendered", tc.set)
		}
		pod := &corev1.Pod{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, pod); err != nil {
			t.Fatal(err)
		}
		c := pod.Spec.Containers[0]
		if len(c.Command) != 1 || c.Command[0] != "playhouse-bench" {
			t.Fatalf("%v: command %v", tc.set, c.Command)
		}
		args := make([]string, 0, len(c.Args))
		swapped := false
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--addr=") {
				a, swapped = "--addr="+srv.Addr(tc.kind).String(), true
			}
			args = append(args, a)
		}
		if !swapped {
			t.Fatalf("%v: args %v have no --addr", tc.set, c.Args)
		}
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, &out, &errOut); err != nil {
			t.Errorf("%v: the helm test args %v fail: %v\n%s", tc.set, args, err, errOut.String())
		} else if !strings.HasPrefix(out.String(), "ok: ") {
			t.Errorf("%v: output %q", tc.set, out.String())
		}
	}
}
