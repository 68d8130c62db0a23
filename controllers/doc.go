// Package controllers holds the PlayHouseServer reconciler.
//
// One PlayHouseServer custom resource becomes a fleet of session-engine pods:
// a ConfigMap with the rendered server configuration, a token signing-key
// Secret, a Deployment, a client Service, and optionally a
// HorizontalPodAutoscaler, a PodDisruptionBudget, a metrics Service and a
// ServiceMonitor.
//
// The shape follows the usual controller-runtime split:
//
//   - pure desired* builders (desired.go, config.go) turn the spec into child
//     objects and are unit-tested without an API server;
//   - one apply path (apply.go) writes every child with server-side apply
//     under the field manager "playhouse-operator", each with a controller
//     owner reference. It never writes an object of a child's name that this
//     PlayHouseServer does not control (ChildNameConflict), and it skips a
//     child whose applied-hash annotation matches the desired object and
//     whose fields still hold what was applied, so a pass with nothing to
//     change sends no request at all;
//   - the reconciler (playhouseserver_controller.go) applies the children in
//     dependency order, keeps the pods' deletion cost equal to their live
//     session count (sessions.go), and writes the status once per pass, from
//     what that pass observed (status.go).
//
// Design choices worth knowing:
//
//   - The signing-key Secret is generated once (32 random bytes) and marked
//     immutable; a reconcile reuses the stored key, and a cache miss is
//     confirmed with a direct read before a key is generated. It is mounted in
//     every mode, not only auth.mode=token, because the reconnect tokens a pod
//     hands out while draining must be accepted by the pod the client moves to.
//   - The config file and both secrets are one projected volume at
//     /etc/playhouse, so no volume is mounted inside another read-only one.
//   - The admin port (/metrics, /status) is never on the client Service, which
//     is often a public load balancer: the ServiceMonitor scrapes a separate
//     headless "<name>-metrics" Service, created while monitoring is on.
//   - The ServiceMonitor kind is looked up in the REST mapper at reconcile
//     time (a miss is trusted for one resync interval), so installing the
//     Prometheus operator later needs no operator restart; its objects are
//     handled as unstructured data, without the Prometheus operator's module.
//   - Turning autoscaling on hands spec.replicas to the HorizontalPodAutoscaler
//     through a second field manager, so the Deployment keeps its size instead
//     of falling back to the API default of one replica.
//   - The manager's cache holds only objects labelled
//     app.kubernetes.io/managed-by=playhouse-operator for the kinds it owns
//     (CacheByObject), not every Pod and ConfigMap of the cluster; Secrets
//     are watched as metadata only (never data), so a PlayHouseServer
//     waiting for a referenced Secret recovers as soon as it appears.
//   - The status follows kstatus: observedGeneration on every pass,
//     Reconciling while converging, Stalled when someone has to act, Ready
//     False whenever stuck.
package controllers
