package serverconfig

import (
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// The defaults of the configuration file and those of the option structs
// (pkg/session, pkg/server) are the same values: the embedded config maps
// onto exactly the defaults a program gets with zero options.
func TestConfigDefaultsMatchOptionDefaults(t *testing.T) {
	got, err := SessionOptions(config.Default(), session.HandlerFuncs{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := session.DefaultOptions()
	got.Handler, got.Logger = nil, nil
	got.AuthenticateMsgID = "" // the older single-name form, already in the list
	if got.BytesPerSecond != 0 || got.BytesBurst != 0 {
		t.Fatalf("the byte rate's zero (engine default) did not map to zero: %v %d", got.BytesPerSecond, got.BytesBurst)
	}
	// In the file 0 means the engine default, as a zero option does.
	got.BytesPerSecond, got.BytesBurst = config.DefaultBytesPerSecond, config.DefaultBytesBurst
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("config defaults map to\n%+v\nsession defaults are\n%+v", got, want)
	}
	d := config.Default()
	if d.Limits.TLSHandshakeTimeout.Duration != server.DefaultHandshakeTimeout ||
		d.Limits.MaxHeaderBytes != server.DefaultMaxHeaderBytes ||
		d.Limits.InboundBudgetBytes != server.DefaultInboundBudgetBytes ||
		d.DrainTimeout.Duration != server.DefaultDrainTimeout ||
		d.Transports.TLS.ReloadInterval.Duration != server.DefaultReloadInterval ||
		d.Transports.WebSocket.Path != server.DefaultWebSocketPath ||
		d.Auth.ReconnectTokenLifetime.Duration != server.DefaultReconnectTokenLifetime {
		t.Fatal("config defaults differ from server.Options defaults")
	}
}

// The edge options map; zero and negative values that mean "off" in the
// file become the options' "off".
func TestSessionOptionsEdgeValues(t *testing.T) {
	c := config.Default()
	c.Protocol.AuthenticateMsgID = "Login"
	c.Limits.RateLimit.BytesPerSecond = -1
	c.Limits.AuthFailures.PerIP = 0
	c.Limits.RateLimit.PacketsPerSecond = 0
	o, err := SessionOptions(c, session.HandlerFuncs{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.AuthenticateMsgID != "Login" || o.BytesPerSecond >= 0 || o.AuthFailuresPerIP >= 0 || o.RatePerSecond >= 0 {
		t.Fatalf("options = %+v", o)
	}
	if o.PreAuthMaxPacketSize != 64<<10 || o.CloseLinger != 2*time.Second || o.CloseQuiet != 250*time.Millisecond || o.AuthCooldown != time.Minute ||
		o.ReplyHold != time.Millisecond || o.IdlePark != 5*time.Second {
		t.Fatalf("options = %+v", o)
	}
	c.Limits.IdlePark = config.D(0)
	if o, err = SessionOptions(c, session.HandlerFuncs{}, nil); err != nil || o.IdlePark >= 0 {
		t.Fatalf("idlePark 0s: IdlePark = %v (%v), want negative (disabled)", o.IdlePark, err)
	}
}

// The listeners, the admin switch and the budget map onto server.Options.
func TestOptionsListenersAndAdmin(t *testing.T) {
	c := config.Default()
	c.Limits.InboundBudgetBytes = 0
	o, err := Options(c, session.HandlerFuncs{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if o.TCP.Addr != "127.0.0.1:7777" || o.WebSocket.Addr != "127.0.0.1:7778" || o.TLSTCP.Addr != "" || o.WSS.Addr != "" || o.Admin.Addr != "127.0.0.1:9090" {
		t.Fatalf("addresses: %+v", o)
	}
	if o.InboundBudgetBytes >= 0 || o.Session.Tokens == nil || o.WebSocket.RefuseMissingOrigin {
		t.Fatalf("budget %d tokens %v refuseMissingOrigin %v", o.InboundBudgetBytes, o.Session.Tokens, o.WebSocket.RefuseMissingOrigin)
	}
	c.Admin.Enabled = false
	if o, _ = Options(c, session.HandlerFuncs{}, quiet); o.Admin.Addr != "" {
		t.Fatalf("admin.enabled false still binds %q", o.Admin.Addr)
	}
	if _, err := Options(c, nil, quiet); err == nil {
		t.Fatal("no handler accepted")
	}
}
