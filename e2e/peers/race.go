//go:build race

package peers

// raceEnabled mirrors the test binary's -race flag so that the regcache
// binary under test is built with the race detector too.
const raceEnabled = true
