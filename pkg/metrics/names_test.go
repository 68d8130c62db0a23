package metrics

import (
	"strings"
	"testing"
)

// The shared name constant is the gauge the collector really exports, so the
// operator's autoscalers and the shipped rules scale on a series that exists.
func TestSessionsActiveIsTheExportedGaugeName(t *testing.T) {
	if want := `fqName: "` + SessionsActive + `"`; !strings.Contains(descActive.String(), want) {
		t.Fatalf("sessions gauge is %s, want %s", descActive, want)
	}
	if SessionsActive != "playhouse_sessions_active" {
		t.Fatalf("SessionsActive = %q: a rename breaks every deployed autoscaler and rule", SessionsActive)
	}
}

// AttachLimits exports limits.maxConnections under the shared name.
func TestAttachLimits(t *testing.T) {
	m := New()
	m.AttachLimits(1234)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == MaxConnections {
			if v := f.GetMetric()[0].GetGauge().GetValue(); v != 1234 {
				t.Fatalf("%s = %v, want 1234", MaxConnections, v)
			}
			return
		}
	}
	t.Fatalf("%s not exported", MaxConnections)
}
