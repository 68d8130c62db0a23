//go:build !race

package memory

// raceOverhead is zero without the race detector.
const raceOverhead = 0

// transportSessions is how many sessions each transport measurement holds
// (two descriptors each, one in this process and one in the child).
const transportSessions = idleSessions
