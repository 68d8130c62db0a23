//go:build race

package memory

// raceOverhead is what the race detector adds per session (shadow memory,
// larger stacks), measured at about 4 KiB.
const raceOverhead = 5 << 10

// transportSessions is how many sessions each transport measurement holds
// (two descriptors each, one in this process and one in the child): fewer
// under the race detector, where TLS handshakes are slow.
const transportSessions = idleSessions / 2
