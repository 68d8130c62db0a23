package metrics

// Metric names other packages depend on (the operator's autoscalers, the
// shipped alerting rules and dashboard). A test scrapes a live registry to
// check each is what the collector really exports.
const (
	// SessionsActiveName is the sessions gauge's name without the namespace.
	SessionsActiveName = "sessions_active"
	// SessionsActive is the full name of the open-sessions gauge, by
	// transport: the autoscaling signal the HorizontalPodAutoscaler and the
	// KEDA trigger scale on.
	SessionsActive = Namespace + "_" + SessionsActiveName
)

// MaxConnections is the full name of the gauge holding the server's
// limits.maxConnections (see AttachLimits): the denominator of the
// "sessions near maxConnections" alert and the dashboard's utilisation.
const MaxConnections = Namespace + "_max_connections"
