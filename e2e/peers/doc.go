// Package peers starts and seeds the real programs that regcache's end-to-end
// tests talk to: upstream registries (go-containerregistry's in-process
// registry and Debian's docker-registry), the regcache binary itself, and the
// fixture images pushed into them.
//
// Every helper takes a testing.TB, fails the test on error (so callers need
// no error plumbing), registers its own cleanup with t.Cleanup, and listens
// on 127.0.0.1 only.
//
// Peers that are separate programs are located with [Require]: a missing
// program skips the test on a developer machine and fails it when CI=true,
// where .ci/install-peers is expected to have installed it.
package peers
