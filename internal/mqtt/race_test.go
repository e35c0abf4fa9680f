//go:build race

package mqtt

// raceEnabled: the race detector multiplies memory figures.
const raceEnabled = true
