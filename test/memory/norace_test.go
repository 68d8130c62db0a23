//go:build !race

package memory

// raceOverhead is zero without the race detector.
const raceOverhead = 0
