// Package controllers holds the PlayHouseServer reconciler.
//
// One PlayHouseServer custom resource becomes a fleet of session-engine pods:
// a ConfigMap with the rendered server configuration, a token signing-key
// Secret, a Deployment, a client Service, and optionally a
// HorizontalPodAutoscaler, a PodDisruptionBudget and a ServiceMonitor.
//
// The shape follows the usual controller-runtime split:
//
//   - pure desired* builders (desired.go) turn the spec into child objects and
//     are unit-tested without an API server;
//   - one apply path (apply.go) writes every child with server-side apply under
//     the field manager "playhouse-operator", each with a controller owner
//     reference;
//   - the reconciler (playhouseserver_controller.go) applies the children,
//     keeps the pods' deletion cost equal to their live session count
//     (sessions.go), and writes the status once per pass (status.go).
package controllers
