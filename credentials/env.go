package credentials

import (
	"context"
)

// envResolver reads env:// references from the server's environment. A
// process's environment is fixed at start: rotating such a secret needs a
// restart (use file:// or vault:// to rotate without one).
type envResolver struct {
	getenv func(string) (string, bool)
}

// Resolve returns the variable's value.
func (e envResolver) Resolve(_ context.Context, r Ref) (string, error) {
	v, ok := e.getenv(r.Env)
	if !ok {
		return "", fail(ErrSecretNotFound, "env: %s is not set in regcache's environment", r.Env)
	}
	if v == "" {
		return "", fail(ErrInvalidSecret, "env: %s is empty", r.Env)
	}
	return v, nil
}
