//go:build race

package memory

// raceOverhead is what the race detector adds per session (shadow memory,
// larger stacks), measured at about 4 KiB.
const raceOverhead = 5 << 10
