package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/playhouse-k8s/playhouse/pkg/client"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	. "github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// scrape fetches /metrics over HTTP and parses the text exposition.
func scrape(t *testing.T, srv *Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + srv.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics = %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the sample of family name whose labels include want, or -1.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetricsEndpoint(t *testing.T) {
	c, certs := testConfig(t)
	c.Limits.MaxConnectionsPerIP = 1
	c.Limits.PerIPExempt = []string{}
	c.Limits.MaxPacketSize = 1024
	srv := startServer(t, c)

	// One session over TLS-TCP that authenticates and echoes (4 frames in, 4 out
	// counting a heartbeat).
	tc, err := tls.Dial("tcp", srv.Addr(transport.KindTLSTCP).String(), certs.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	echoOverStream(t, tc, "metrics-user")
	// A second connection from the same address is refused (per-IP limit 1).
	extra, err := net.Dial("tcp", srv.Addr(transport.KindTCP).String())
	if err != nil {
		t.Fatal(err)
	}
	_ = extra.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("per-IP limit not enforced")
	}
	extra.Close()

	tlsLabel := map[string]string{"transport": "tls-tcp"}
	// The sent counters move after the write returns on the server, which can
	// be just after the client has read the reply: wait for them.
	var fams map[string]*dto.MetricFamily
	waitFor(t, "two packets counted as sent", func() bool {
		fams = scrape(t, srv)
		return value(fams, "playhouse_packets_sent_total", tlsLabel) == 2
	})
	for name, want := range map[string]float64{
		"playhouse_sessions_active":        1,
		"playhouse_connections_total":      1,
		"playhouse_packets_received_total": 2,
		"playhouse_packets_sent_total":     2,
	} {
		if got := value(fams, name, tlsLabel); got != want {
			t.Errorf("%s{transport=tls-tcp} = %v, want %v", name, got, want)
		}
	}
	if got := value(fams, "playhouse_sessions_active", map[string]string{"transport": "ws"}); got != 0 {
		t.Errorf("ws sessions_active = %v, want a 0 series", got)
	}
	if got := value(fams, "playhouse_connections_rejected_total", map[string]string{"reason": "per_ip"}); got != 1 {
		t.Errorf("rejected per_ip = %v", got)
	}
	if got := value(fams, "playhouse_bytes_received_total", tlsLabel); got <= 0 {
		t.Errorf("bytes received = %v", got)
	}
	if got := value(fams, "playhouse_packet_size_bytes", map[string]string{"direction": "in"}); got != 2 {
		t.Errorf("packet_size_bytes{in} count = %v", got)
	}
	if got := value(fams, "playhouse_handler_duration_seconds", nil); got != 1 {
		t.Errorf("handler_duration count = %v (one EchoRequest reached the handler)", got)
	}
	if got := value(fams, "playhouse_tls_cert_expiry_timestamp_seconds", nil); got != float64(certs.NotAfter.Unix()) {
		t.Errorf("cert expiry = %v, want %v", got, certs.NotAfter.Unix())
	}
	if got := value(fams, "playhouse_draining", nil); got != 0 {
		t.Errorf("draining = %v", got)
	}
	if got := value(fams, "playhouse_max_connections", nil); got != float64(c.Limits.MaxConnections) {
		t.Errorf("max_connections = %v, want %d", got, c.Limits.MaxConnections)
	}
	if value(fams, "go_goroutines", nil) <= 0 || value(fams, "process_open_fds", nil) <= 0 {
		t.Error("Go runtime or process collector missing")
	}

	// Close the session with a protocol violation: counted by reason.
	tc.Write([]byte{0xff, 0x7f, 0, 0})
	_ = tc.SetReadDeadline(time.Now().Add(testTimeout))
	_, _ = tc.Read(make([]byte, 1))
	waitFor(t, "session closed", func() bool { return srv.Manager().Count() == 0 })
	srv.Manager().SetDraining(true)
	fams = scrape(t, srv)
	if got := value(fams, "playhouse_disconnections_total", map[string]string{"transport": "tls-tcp", "reason": "FrameTooLarge"}); got != 1 {
		t.Errorf("disconnections{FrameTooLarge} = %v", got)
	}
	if got := value(fams, "playhouse_sessions_active", tlsLabel); got != 0 {
		t.Errorf("sessions_active after close = %v", got)
	}
	if got := value(fams, "playhouse_draining", nil); got != 1 {
		t.Errorf("draining = %v", got)
	}
}

// TestMetricNamesLint runs the same checks as `promtool check metrics`.
func TestMetricNamesLint(t *testing.T) {
	c, _ := testConfig(t)
	srv := startServer(t, c)
	fams, err := srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours []*dto.MetricFamily
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "playhouse_") {
			ours = append(ours, f)
		}
	}
	if len(ours) < 14 {
		t.Fatalf("only %d playhouse_ families", len(ours))
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// A request whose echo cannot be encoded (its body is exactly maxPacketSize,
// so the reply header makes it larger) is answered with ErrorCode 99 and
// counted in playhouse_unencodable_replies_total.
func TestUnencodableReplyMetric(t *testing.T) {
	c, _ := testConfig(t)
	c.Limits.MaxPacketSize = 1024
	srv := startServer(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cl, err := client.Dial(ctx, srv.Addr(transport.KindTCP).String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Authenticate(ctx, "AuthenticateRequest", []byte("big-echo")); err != nil {
		t.Fatal(err)
	}
	// Compact request body: 1 + len(MsgId) + 2 (MsgSeq) + 8 (StageId) + payload.
	payload := make([]byte, 1024-(1+len("EchoRequest")+2+8))
	resp, err := cl.Request(ctx, "EchoRequest", 0, payload)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != protocol.InternalError {
		t.Fatalf("ErrorCode = %d, want %d", resp.ErrorCode, protocol.InternalError)
	}
	if got := value(scrape(t, srv), "playhouse_unencodable_replies_total", nil); got != 1 {
		t.Fatalf("playhouse_unencodable_replies_total = %v, want 1", got)
	}
}
