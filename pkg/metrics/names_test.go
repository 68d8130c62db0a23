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
